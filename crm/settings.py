"""Leadcycle settings: one module, configured from the environment.

Every value has a laptop-safe default so ``make run`` works on a fresh machine;
production sets ``DEBUG=0`` and the variables listed in the README.
"""

import os
import secrets
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("LEADCYCLE_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


DEBUG = env_bool("DEBUG", True)


def _secret_key() -> str:
    """Return SECRET_KEY from the environment, or a key generated once into var/ in DEBUG."""
    key = os.environ.get("SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")


def _site_url() -> str:
    """Return SITE_URL, the base of the links in emails; required when DEBUG is off.

    The laptop default would send every recipient's unsubscribe, click and open links to
    their own machine, and nothing would say so: production must name its address.
    """
    url = os.environ.get("SITE_URL", "").rstrip("/")
    if url:
        return url
    if not DEBUG:
        raise ImproperlyConfigured(
            "SITE_URL must be set when DEBUG is off: it is the base of the unsubscribe and "
            "tracking links in emails, e.g. SITE_URL=https://crm.example.com."
        )
    return "http://127.0.0.1:8000"


SITE_URL = _site_url()

INSTALLED_APPS = [
    "crm.apps.AdminConfig",  # django.contrib.admin with our site (crm.admin_site)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files for /api/docs/, served from here
    "django_htmx",
    "anymail",
    "crm",
    "scoring",
    "nurture",
    "reports",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "crm.middleware.SecurityHeadersMiddleware",
    "crm.middleware.ApiBodyLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "crm.middleware.RoleAccessMiddleware",
    # Last, so its process_exception sees a view's database error first: 503 + Retry-After.
    "crm.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "crm.urls"
WSGI_APPLICATION = "crm.wsgi.application"
ASGI_APPLICATION = "crm.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "crm.context_processors.roles",
                "crm.context_processors.notices",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'leadcycle.sqlite3'}"
DATABASES = {
    "default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("CONN_MAX_AGE", 60))
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server, the worker and beat read while one of them writes;
    # IMMEDIATE transactions make writers queue instead of failing with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests use a file too: an in-memory test database is opened in shared-cache mode,
    # where a second writer fails at once ("table is locked") instead of queueing, so
    # concurrency tests (two reps deciding one MQL) could not run as in production.
    # One file per process: test runs in parallel (xdist workers, other checkouts) never share.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"leadcycle-test-{os.getpid()}.sqlite3")
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # No JIT: our queries are short reads/writes; on report reads PostgreSQL spent 0.3–0.9 s
    # compiling per query (EXPLAIN ANALYZE, 100k contacts) for ~0.6 s of execution.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth ---------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# Failed log-ins allowed per window, per user name and per client address.
LOGIN_THROTTLE_ATTEMPTS = env_int("LOGIN_THROTTLE_ATTEMPTS", 5)
LOGIN_THROTTLE_WINDOW = env_int("LOGIN_THROTTLE_WINDOW", 60)

# --- I18N / time ----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files -----------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Cache (log-in throttling, rate limits) ---------------------------------------------------
# A database cache is shared by every process on every machine; locmem would not be.
CACHES = {
    "default": {
        "BACKEND": os.environ.get("CACHE_BACKEND", "django.core.cache.backends.db.DatabaseCache"),
        "LOCATION": os.environ.get("CACHE_LOCATION", "leadcycle_cache"),
    }
}

# --- Security -----------------------------------------------------------------------------------
SECURE_HTTPS = env_bool("SECURE_HTTPS", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
SECURE_SSL_REDIRECT = SECURE_HTTPS and env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000) if SECURE_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HTTPS
SECURE_HSTS_PRELOAD = SECURE_HTTPS
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_PROXY", False) else None
)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'self'; object-src 'none'"
)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Email ------------------------------------------------------------------------------------
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Leadcycle <marketing@leadcycle.example>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# django-anymail: provider keys come from the environment, e.g. ANYMAIL_POSTMARK_SERVER_TOKEN.
ANYMAIL = {
    key.removeprefix("ANYMAIL_"): value
    for key, value in os.environ.items()
    if key.startswith("ANYMAIL_")
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")


def _filesystem_broker_options() -> dict:
    """The embedded broker's folders under VAR_DIR, created here if missing.

    kombu's filesystem transport creates none of them: without them every task send fails
    (FileNotFoundError). Every process — web, worker, beat, manage.py — reads these
    settings, so whatever LEADCYCLE_VAR_DIR names has its folders before anything is sent.
    """
    broker = VAR_DIR / "broker"
    for folder in ("out", "processed", "control"):
        (broker / folder).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(broker / "out"),
        "data_folder_out": str(broker / "out"),
        "processed_folder": str(broker / "processed"),
        # Fanout exchange tables (worker remote control); kombu's default is ./control.
        "control_folder": str(broker / "control"),
        "store_processed": False,
    }


CELERY_BROKER_TRANSPORT_OPTIONS = (
    _filesystem_broker_options()
    if CELERY_BROKER_URL.startswith("filesystem")
    else {"visibility_timeout": 3600}
)
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- REST framework -----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["crm.api.permissions.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "crm.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "crm.api.filters.StableOrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "crm.api.errors.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Leadcycle API",
    "DESCRIPTION": "Contacts, activities, segments, nurture programs, scoring, MQLs and reports.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # drf-spectacular serves the schema and docs with AllowAny unless told otherwise.
    "SERVE_PERMISSIONS": ["crm.api.permissions.RolePermission"],
    # One name per shared choice set: left to itself drf-spectacular names it after one of
    # the fields that use it, with a warning (check --deploy prints them). These are the
    # names the schema has always published, kept for clients generated from it.
    "ENUM_NAME_OVERRIDES": {
        "ActivityKindEnum": "crm.models.choices.ActivityKind",
        "FromStageEnum": "crm.models.choices.Stage",
    },
    # Swagger UI from our static files: the CSP allows no CDN (script-src 'self').
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- Domain flow: handlers called by the core, in this order -----------------------------
# See ARCHITECTURE.md, "Dependencies between apps". Each entry is a dotted path to a function
# decorated with crm.events.handler, which declares whether it runs inside the recording
# transaction or after it commits.
#
# The "activities recorded" handlers that declare the "queued" phase (all of them today) run
# off the request: the batch is queued with its activities and a worker applies queued
# batches in bulk right after the commit (crm.activity_queue). Off, they run inside the
# recording transaction (the test suite's default, so a test reads a score right after
# recording; tests/crm/test_activity_queue.py and the live tests cover the queue).
ACTIVITY_HANDLERS_QUEUED = env_bool("ACTIVITY_HANDLERS_QUEUED", True)
# Activities one drain transaction applies (several queued batches merged into one event).
ACTIVITY_QUEUE_DRAIN_SIZE = int(os.environ.get("ACTIVITY_QUEUE_DRAIN_SIZE", "5000"))
# Failed drains of one batch before it is parked for an admin to retry.
ACTIVITY_QUEUE_MAX_ATTEMPTS = 5
ACTIVITIES_RECORDED_HANDLERS = [
    # Scoring before segments: a segment on the score re-evaluates with the batch's scores.
    "scoring.handlers.on_activities_recorded",
    "crm.segments.on_activities_recorded",
    "nurture.handlers.on_activities_recorded",
    "reports.handlers.on_activities_recorded",
    "reports.credit_facts.on_activities_recorded",
    "reports.csat_facts.on_activities_recorded",
]
STAGE_CHANGED_HANDLERS = [
    "crm.segments.on_stage_changed",
    "scoring.handlers.on_stage_changed",
    "nurture.handlers.on_stage_changed",
    "reports.handlers.on_stage_changed",
    "reports.credit_facts.on_stage_changed",
]
CONTACTS_CHANGED_HANDLERS = [
    "crm.campaign_members.on_contacts_changed",
    "crm.segments.on_contacts_changed",
    "scoring.handlers.on_contacts_changed",
    "reports.credit_facts.on_contacts_changed",
]
# Called inside a contact merge, before the duplicate's other rows are re-pointed and it is
# deleted (crm.services.contacts.contact_merge).
CONTACTS_MERGING_HANDLERS = [
    "nurture.handlers.on_contacts_merging",
    "scoring.handlers.on_contacts_merging",
    "reports.handlers.on_contacts_merging",
]
# Called by nurture once per batch of enrollments it creates, inside its transaction
# (event: nurture.services.enrollment.EnrollmentsCreated).
ENROLLMENTS_CREATED_HANDLERS = ["reports.handlers.on_enrollments_created"]
# What other apps add to CRM pages (crm.extensions).
CONTACT_TIMELINE_PROVIDERS: list[str] = [
    "scoring.extensions.timeline",
    "nurture.providers.timeline",
]
CONTACT_PANEL_PROVIDERS: list[str] = ["scoring.extensions.panel"]
CONTACT_SUMMARY_PROVIDERS: list[str] = [
    "scoring.extensions.summaries",
    "nurture.providers.summaries",
]
# Modules with export(contact) -> dict and erase(contact) -> None: what each app holds about
# a contact, for the personal-data export and erasure (crm.privacy).
CONTACT_DATA_PROVIDERS: list[str] = ["nurture.privacy", "scoring.privacy", "reports.privacy"]
# Extra segment condition types contributed by other apps (crm.segments), e.g. nurture's
# "in / not in a program".
SEGMENT_CONDITION_PROVIDERS: list[str] = ["nurture.segment_conditions.CONDITIONS"]
# Management-command hooks that fill each app's demo data, in order.
DEMO_SEEDERS = [
    "crm.demo.seed",
    "nurture.demo.seed",
    "scoring.demo.seed",  # after every activity: the score history replays them all
    # After what segments read (activities with the email traffic, stages with scoring's
    # hand-offs, owners): their year of joins and leaves replays it.
    "crm.segment_demo.seed",
    "reports.demo.seed",
    "reports.review.demo.seed",
    # Last: campaign members from the activities the seeders above bulk-loaded.
    "crm.campaign_members.demo_seed",
]

# --- Product settings -----------------------------------------------------------------------
ACTIVITY_BATCH_LIMIT = 1000
MQL_RESPONSE_TARGET_HOURS = env_int("MQL_RESPONSE_TARGET_HOURS", 24)
# Database connections a PostgreSQL rescore runs in at once, a slice of contacts each
# (scoring.rescore_slices): one per core the database server can give it.
SCORING_RESCORE_CONNECTIONS = env_int("SCORING_RESCORE_CONNECTIONS", 2)
TRACKING_TOKEN_MAX_AGE_DAYS = env_int("TRACKING_TOKEN_MAX_AGE_DAYS", 90)
NURTURE_UNSUBSCRIBE_MAILTO = os.environ.get("NURTURE_UNSUBSCRIBE_MAILTO", "")
# How long a claimed nurture email may stay "sending" before a later tick takes it back
# (its worker died between the claim and the status update): nurture.services.sending.
NURTURE_SEND_LEASE_SECONDS = env_int("NURTURE_SEND_LEASE_SECONDS", 600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

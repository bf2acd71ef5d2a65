"""Demo data for nurture, called by `manage.py seed_demo` (settings.DEMO_SEEDERS).

Programs for the campaigns the CRM demo made (an onboarding drip with a branch, a webinar
follow-up, birthday and renewal emails, one recycle program per not-ready reason), their
templates, and a year of enrollments, sends and email events with realistic rates —
about eight email activities per contact — loaded in bulk (COPY on PostgreSQL).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

from crm import bulkload
from crm.demo import ingest_rules_apply_bulk
from crm.models import Activity, ActivityKind, Contact, LifecycleTransition, Stage

from .models import EmailSend, EmailTemplate, Enrollment, Program, Step, Trigger

CHUNK = 20_000
K = ActivityKind
SIGNATURE = "{{ owner.name|default:'The Leadcycle team' }}<br>{{ owner.signature|linebreaksbr }}"
TEMPLATES = {
    "onboarding-1": ("Welcome aboard, {{ contact.first_name|default:'there' }}", "Getting started"),
    "onboarding-2": ("3 tips to get more from your trial", "Tips"),
    "onboarding-2-clicked": ("Want a guided demo, {{ contact.first_name|default:'there' }}?", "Demo"),  # noqa: E501
    "onboarding-3": ("How {{ company.name|default:'teams like yours' }} automate reporting", "Case study"),  # noqa: E501
    "webinar": ("Thanks for attending — slides and recording inside", "Webinar recording"),
    "birthday": ("Happy birthday, {{ contact.first_name|default:'friend' }}!", "A small gift"),
    "renewal": ("Your plan renews next month", "Renewal"),
    "newsletter": ("This month at Leadcycle: {{ contact.job_title|default:'ideas' }} edition", "Newsletter"),  # noqa: E501
    "recycle-1": ("Still exploring? A 5-minute read for you", "Recycle: content"),
    "recycle-2": ("What changed in the last quarter", "Recycle: news"),
    "recycle-3": ("Ready when you are, {{ contact.first_name|default:'there' }}", "Recycle: check-in"),  # noqa: E501
}  # fmt: skip
RECYCLE_REASONS = {
    "no_budget": "No budget",
    "bad_timing": "Bad timing",
    "no_project": "No project yet",
    "no_authority": "No authority",
}


def _html(title: str, slug: str) -> str:
    return (
        "<html><body><p>Hi {{ contact.first_name|default:'there' }},</p>"
        f'<p>{title}: <a href="https://leadcycle.example/{slug}">read more</a>.</p>'
        f"<p>{SIGNATURE}</p>"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
    )


def _templates() -> dict[str, EmailTemplate]:
    out = {}
    for slug, (subject, title) in TEMPLATES.items():
        out[slug] = EmailTemplate.objects.create(
            name=f"{title} ({slug})",
            subject=subject,
            preheader=title,
            html_body=_html(title, slug),
            text_body="Hi {{ contact.first_name|default:'there' }},\n\n"
            f"{title}: https://leadcycle.example/{slug}\n\n"
            "Unsubscribe: {{ unsubscribe_url }}\n",
        )
    return out


def _steps(program: Program, spec: list[tuple]) -> list[Step]:
    steps = [
        Step.objects.create(program=program, position=i + 1, kind=kind, config=config, template=t)
        for i, (kind, config, t) in enumerate(spec)
    ]
    return steps


def programs_create(ctx) -> dict[str, tuple[Program, list[Step]]]:
    campaigns = ctx.shared.get("campaigns", {})
    t = _templates()
    made: dict[str, tuple[Program, list[Step]]] = {}

    def program(key, campaign_name, **fields):
        campaign = campaigns.get(campaign_name)
        if campaign is None:
            return None
        p = Program.objects.create(
            campaign=campaign, status=Program.Status.ACTIVE, created_by=ctx.users.get("marketing"),
            **fields,
        )  # fmt: skip
        made[key] = (p, [])
        return p

    p = program(
        "onboarding", "Onboarding drip", name="Onboarding drip", holdout_percent=10,
        send_days=[0, 1, 2, 3, 4], send_hour_start=8, send_hour_end=18,
        description="Three emails over a week; people who click the first get a demo offer.",
    )  # fmt: skip
    if p:
        s = _steps(
            p,
            [
                ("email", {}, t["onboarding-1"]),
                ("wait", {"days": 3}, None),
                ("branch", {}, None),
                ("email", {}, t["onboarding-2-clicked"]),
                ("end", {}, None),
                ("email", {}, t["onboarding-2"]),
                ("wait", {"days": 4}, None),
                ("email", {}, t["onboarding-3"]),
            ],
        )
        s[2].config = {"condition": {"type": "clicked"}, "yes_step": s[3].pk, "no_step": s[5].pk}
        s[2].save()
        made["onboarding"] = (p, s)
        Trigger.objects.create(program=p, kind="activity", activity_kind=K.FORM_SUBMITTED,
                               form="trial-signup")  # fmt: skip
    webinar_campaign = campaigns.get("Q3 Webinar: Data Security")
    p = program("webinar", "Webinar follow-up", name="Webinar follow-up", reentry="always")
    if p:
        s = _steps(
            p,
            [
                ("email", {}, t["webinar"]),
                ("wait", {"days": 2}, None),
                ("notify_owner", {"message": "attended the webinar: follow up"}, None),
            ],
        )
        made["webinar"] = (p, s)
        Trigger.objects.create(program=p, kind="activity", activity_kind=K.WEBINAR_ATTENDED,
                               campaign=webinar_campaign)  # fmt: skip
    p = program("birthday", "Customer anniversary", name="Birthday greetings", reentry="always")
    if p:
        made["birthday"] = (p, _steps(p, [("email", {}, t["birthday"])]))
        Trigger.objects.create(program=p, kind="date", date_attribute="birthday", yearly=True,
                               last_run_on=ctx.now.date())  # fmt: skip
    p = program("renewal", "Customer anniversary", name="Renewal reminder", reentry="always")
    if p:
        made["renewal"] = (p, _steps(p, [("email", {}, t["renewal"])]))
        Trigger.objects.create(program=p, kind="date", date_attribute="renewal_date",
                               offset_days=-30, yearly=False, last_run_on=ctx.now.date())  # fmt: skip  # noqa: E501
    p = program("newsletter", "Newsletter", name="Monthly newsletter", exit_on_mql=False)
    if p:
        spec = [("email", {}, t["newsletter"]), ("wait", {"days": 30}, None)] * 4
        made["newsletter"] = (p, _steps(p, spec[:-1]))
        Trigger.objects.create(program=p, kind="activity", activity_kind=K.FORM_SUBMITTED,
                               form="newsletter-signup")  # fmt: skip
    for code, label in RECYCLE_REASONS.items():
        p = program(f"recycle:{code}", "Recycle – Not ready", name=f"Recycle: {label}",
                    exit_on_recycle=False, reentry="always")  # fmt: skip
        if p:
            s = _steps(
                p,
                [
                    ("email", {}, t["recycle-1"]),
                    ("wait", {"days": 30}, None),
                    ("email", {}, t["recycle-2"]),
                    ("wait", {"days": 60}, None),
                    ("email", {}, t["recycle-3"]),
                ],
            )
            made[f"recycle:{code}"] = (p, s)
            Trigger.objects.create(program=p, kind="recycled", reason_code=code)
    return made


class _Writer:
    """Generates enrollment, send and activity rows with explicit ids, loaded per chunk."""

    def __init__(self, ctx):
        self.ctx, self.rng, self.now = ctx, ctx.rng, ctx.now
        self.enrollment_id = bulkload.next_id(Enrollment)
        self.send_id = bulkload.next_id(EmailSend)
        self.activity_id = bulkload.next_id(Activity)
        self.enrollments, self.sends, self.activities = [], [], []
        self.totals = [0, 0, 0]

    def activity(self, cid, kind, at, campaign_id, mid, *, url="", machine=False, details="{}",
                 external=None):  # fmt: skip
        self.activities.append(
            (self.activity_id, cid, kind, at, at, campaign_id, external, mid, url, machine, details)
        )
        self.activity_id += 1

    def email(self, cid, program, step, enrollment_id, at) -> bool:
        """One sent email and what followed it; return whether the contact clicked."""
        rng, mid = self.rng, f"demo-{self.send_id}@leadcycle.example"
        campaign = program.campaign_id
        link = f"https://leadcycle.example/{step.template.name.split('(')[-1].rstrip(')')}"
        self.sends.append(
            (self.send_id, enrollment_id, step.pk, cid, program.pk, step.template_id, mid, "",
             "sent", "", "", 1, step.template.subject[:300], json.dumps([link]), at, at)
        )  # fmt: skip
        self.send_id += 1
        self.activity(cid, K.EMAIL_SENT, at, campaign, mid, external=f"send:{mid}")
        r = rng.random()
        if r < 0.03:  # bounced; a fifth of them hard
            hard = r < 0.006
            details = json.dumps({"bounce_type": "hard" if hard else "soft"})
            self.activity(cid, K.EMAIL_BOUNCED, min(at + timedelta(minutes=1), self.now), campaign,
                          mid, details=details)  # fmt: skip
            return False
        self.activity(
            cid, K.EMAIL_DELIVERED, min(at + timedelta(seconds=20), self.now), campaign, mid
        )
        if rng.random() < 0.12:  # privacy proxies fetch the pixel at once
            self.activity(cid, K.EMAIL_OPENED, min(at + timedelta(seconds=3), self.now), campaign,
                          mid, machine=True)  # fmt: skip
        clicked = False
        if rng.random() < 0.32:
            opened_at = min(at + timedelta(hours=rng.expovariate(1 / 6)), self.now)
            self.activity(cid, K.EMAIL_OPENED, opened_at, campaign, mid)
            if rng.random() < 0.18:
                clicked = True
                click_at = min(opened_at + timedelta(minutes=rng.randint(1, 30)), self.now)
                self.activity(cid, K.EMAIL_CLICKED, click_at, campaign, mid, url=link,
                              details=json.dumps({"url": link, "link": 0}))  # fmt: skip
        r = rng.random()
        if r < 0.003:
            self.activity(cid, K.EMAIL_UNSUBSCRIBED, min(at + timedelta(hours=2), self.now),
                          campaign, mid, external=f"unsub:{mid}")  # fmt: skip
        elif r < 0.0035:
            self.activity(
                cid, K.EMAIL_COMPLAINED, min(at + timedelta(hours=3), self.now), campaign, mid
            )
        return clicked

    def run(
        self, cid, program, steps, entered, *, source, held=False, stop_at=None, stop_reason=""
    ):
        """Walk a program's steps from ``entered``: emails up to now, then the next due step.
        An entry drawn after now (a contact created in the last days) is not history yet."""
        if entered > self.now:
            return
        eid = self.enrollment_id
        self.enrollment_id += 1
        if held:
            self.enrollments.append(
                (eid, cid, program.pk, "held_out", None, None, entered, None, "", source)
            )
            return
        index = {s.pk: i for i, s in enumerate(steps)}
        at, i, clicked = entered, 0, False
        state, current, next_run, exited_at, reason = "completed", None, None, entered, ""
        for _ in range(20):
            if stop_at and at >= stop_at:
                state, current, exited_at, reason = "exited", None, stop_at, stop_reason
                break
            if i >= len(steps) or steps[i].kind == "end":
                exited_at = at
                break
            step = steps[i]
            if at > self.now:  # the rest is still ahead: leave it due for the scheduler
                state, current, next_run, exited_at = "active", step.pk, at, None
                break
            if step.kind == "email":
                clicked = self.email(cid, program, step, eid, at)
                i += 1
                at += timedelta(minutes=1)
            elif step.kind == "wait":
                at += timedelta(days=step.config.get("days", 0), hours=step.config.get("hours", 0))
                i += 1
            elif step.kind == "branch":
                target = step.config.get("yes_step" if clicked else "no_step")
                i = index.get(target, i + 1)
            else:
                i += 1
        self.enrollments.append((eid, cid, program.pk, state, current, next_run, entered, exited_at,
                                 reason, source))  # fmt: skip

    def flush(self) -> None:
        bulkload.rows_load(
            model=Enrollment,
            fields=["id", "contact", "program", "state", "current_step", "next_run_at",
                    "entered_at", "exited_at", "exit_reason", "source"],
            rows=self.enrollments,
        )  # fmt: skip
        bulkload.rows_load(
            model=EmailSend,
            fields=["id", "enrollment", "step", "contact", "program", "template", "message_id",
                    "esp_message_id", "status", "skip_reason", "error", "attempts", "subject",
                    "links", "created_at", "sent_at"],
            rows=self.sends,
        )  # fmt: skip
        bulkload.rows_load(
            model=Activity,
            fields=["id", "contact", "kind", "occurred_at", "recorded_at", "campaign",
                    "external_id", "message_id", "url", "is_machine", "details"],
            rows=self.activities,
        )  # fmt: skip
        self.totals = [
            self.totals[0] + len(self.enrollments),
            self.totals[1] + len(self.sends),
            self.totals[2] + len(self.activities),
        ]
        self.enrollments, self.sends, self.activities = [], [], []


def seed(ctx) -> None:
    """Fill nurture's tables for the demo; `ctx` carries the seed, size and shared objects."""
    from django.db import transaction

    made = programs_create(ctx)
    id_range = ctx.shared.get("contact_id_range")
    if not made or not id_range:
        ctx.log(f"{len(made)} nurture programs (no contacts to enroll)")
        return
    lo, hi = id_range
    onboarding = made.get("onboarding")
    webinar = made.get("webinar")
    birthday = made.get("birthday")
    newsletter = made.get("newsletter")
    webinar_at = {}
    if webinar:
        attended = Activity.objects.filter(
            kind=K.WEBINAR_ATTENDED, contact_id__gte=lo, contact_id__lte=hi
        )
        webinar_campaign = ctx.shared["campaigns"].get("Q3 Webinar: Data Security")
        if webinar_campaign:
            attended = attended.filter(campaign=webinar_campaign)
        webinar_at = dict(attended.order_by("occurred_at").values_list("contact_id", "occurred_at"))
    recycled: dict[int, tuple] = {}
    for cid, at, code in LifecycleTransition.objects.filter(
        to_stage=Stage.RECYCLED, contact_id__gte=lo, contact_id__lte=hi
    ).values_list("contact_id", "at", "reason_code"):
        recycled[cid] = (at, code)
    mql_at = dict(
        LifecycleTransition.objects.filter(
            to_stage=Stage.MQL, contact_id__gte=lo, contact_id__lte=hi
        ).values_list("contact_id", "at")
    )
    writer = _Writer(ctx)
    rng = ctx.rng
    contacts = (
        Contact.objects.filter(pk__gte=lo, pk__lte=hi, email_status="active")
        .exclude(consent_basis="none")
        .order_by("pk")
        .values_list("pk", "created_at", "attributes")
    )
    # One transaction per chunk of contacts: a single transaction over millions of rows
    # spends many minutes in its deferred foreign-key checks at COMMIT with nothing to
    # show; per chunk the checks are spread out and progress is visible. The rng is drawn
    # in the same order either way, so the data is the same for a given seed.
    started = time.monotonic()
    for chunk_lo in range(lo, hi + 1, CHUNK):
        chunk_hi = min(chunk_lo + CHUNK - 1, hi)
        for cid, created, attributes in contacts.filter(pk__gte=chunk_lo, pk__lte=chunk_hi):
            if onboarding and rng.random() < 0.85:
                program, steps = onboarding
                entered = created + timedelta(minutes=rng.randint(5, 120))
                writer.run(cid, program, steps, entered, source="activity",
                           held=program.is_held_out(cid), stop_at=mql_at.get(cid),
                           stop_reason="became_mql")  # fmt: skip
            if newsletter and rng.random() < 0.45:
                entered = created + timedelta(days=rng.randint(1, 20))
                writer.run(cid, *newsletter, entered, source="activity")
            if webinar and cid in webinar_at and webinar_at[cid] >= created:
                writer.run(cid, *webinar, webinar_at[cid] + timedelta(hours=2), source="activity")
            if cid in recycled:
                at, code = recycled[cid]
                pair = made.get(f"recycle:{code}")
                if pair:
                    writer.run(cid, *pair, at + timedelta(hours=1), source="recycled")
            bday = (attributes or {}).get("birthday") if birthday else None
            if bday and len(bday) >= 5:
                when = _last_occurrence(bday[-5:], ctx.now)
                if when and when > created:
                    writer.run(cid, *birthday, when, source="date")
        with transaction.atomic():
            writer.flush()
            # Unsubscribes, complaints and hard bounces loaded above suppress their addresses.
            ingest_rules_apply_bulk(id_from=chunk_lo, id_to=chunk_hi)
        if hi > lo + CHUNK:
            rate = (chunk_hi - lo + 1) / max(time.monotonic() - started, 1e-6)
            ctx.log(
                f"nurture: {chunk_hi - lo + 1:,}/{hi - lo + 1:,} contacts, "
                f"{writer.totals[2]:,} email activities ({rate:,.0f} contacts/s)"
            )
    bulkload.sequences_reset(Enrollment, EmailSend, Activity)
    n = max(1, hi - lo + 1)
    ctx.log(
        f"{len(made)} nurture programs; {writer.totals[0]:,} enrollments, "
        f"{writer.totals[1]:,} sends, {writer.totals[2]:,} email activities "
        f"({writer.totals[2] / n:.1f} per contact)"
    )


def _last_occurrence(month_day: str, now):
    """The last time this month-day came round before now, at 09:00."""
    try:
        month, day = int(month_day[:2]), int(month_day[3:5])
        candidate = now.replace(month=month, day=day, hour=9, minute=0, second=0, microsecond=0)
    except ValueError:
        return None
    if candidate > now:
        try:
            candidate = candidate.replace(year=candidate.year - 1)
        except ValueError:
            return None
    return candidate

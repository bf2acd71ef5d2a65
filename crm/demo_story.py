"""One demo contact's year: its lifecycle story, deal and activities (used by ``crm.demo``).

Pure Python over a seeded ``random.Random``: no database access, so the seeder can
generate a chunk of contacts, then load it with a few bulk statements. The vocabularies
here are what makes the demo look like a B2B company's CRM.
"""

from __future__ import annotations

import json
from bisect import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate
from random import Random

from .models import ActivityKind as K
from .models import Source
from .models import Stage as S

DAY = timedelta(days=1)
SITE = "https://www.leadcycle.example"


def _words(text: str) -> list[str]:
    return text.split()


class Weighted:
    """Draws from weighted choices with one random number and a bisect (hot path)."""

    def __init__(self, pairs):
        self.values = [v for v, _ in pairs]
        self.cum = list(accumulate(w for _, w in pairs))

    def __call__(self, rng: Random):
        return self.values[bisect(self.cum, rng.random() * self.cum[-1])]


FIRST_NAMES = _words(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Daniel Karen Matthew Nancy Anthony Lisa Mark "
    "Sandra Steven Ashley Paul Emily Andrew Michelle Joshua Amanda Kevin Melissa Brian Laura "
    "Lukas Anna Jonas Lea Felix Sophie Maximilian Marie Leon Hannah Pierre Emma Finn Mia Noah "
    "Clara Elias Lena Louis Chloe Hugo Camille Arthur Manon Jules Ines Lucas Sofia Mateo Lucia "
    "Diego Valentina Pablo Martina Marco Giulia Luca Chiara Lars Ingrid Sven Astrid Erik Freja "
    "Arjun Priya Rahul Ananya Vikram Divya Wei Mei Hiroshi Yuki Jin Seo-yeon Oliver Amelia "
    "Jack Isla Harry Ava George Grace Liam Olivia Ethan Zoe Mohammed Fatima Omar Layla Tomasz "
    "Katarzyna Jan Eva Daan Sanne Bram Fleur Mateus Beatriz Rafael Larissa Kofi Ama"
)
LAST_NAMES = [
    n.replace("_", " ")
    for n in _words(
        "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
        "Wilson Anderson Taylor Thomas Moore Jackson Martin Lee Thompson White Harris Clark Lewis "
        "Walker Young Allen King Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell "
        "Mueller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch Richter "
        "Klein Wolf Neumann Dubois Durand Leroy Moreau Laurent Simon Michel Lefebvre Fontaine "
        "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Fernandez Gonzalez Sanchez "
        "Perez Gomez Diaz Silva Santos Oliveira Costa Pereira Andersson Johansson Karlsson Nilsson "
        "Larsen Hansen Jensen Nielsen Patel Sharma Singh Kumar Gupta Iyer Reddy Chen Wang Li Zhang "
        "Liu Tanaka Suzuki Sato Watanabe Kim Park Choi Nguyen Tran Kowalski Nowak Wisniewski "
        "de_Vries Jansen Bakker Visser Smit O'Brien Murphy Kelly Walsh Byrne Mensah Okafor Haddad"
    )
]
PAIRS = len(FIRST_NAMES) * len(LAST_NAMES)
PAIR_STEP = 7919  # a prime: k ↦ (salt + k·step) mod PAIRS is a bijection, so names stay unique

COUNTRIES = [
    # code, weight, time zone, dialling code
    ("US", 30, "America/New_York", "1"),
    ("GB", 12, "Europe/London", "44"),
    ("DE", 14, "Europe/Berlin", "49"),
    ("FR", 7, "Europe/Paris", "33"),
    ("NL", 5, "Europe/Amsterdam", "31"),
    ("SE", 3, "Europe/Stockholm", "46"),
    ("ES", 4, "Europe/Madrid", "34"),
    ("IT", 3, "Europe/Rome", "39"),
    ("CA", 5, "America/Toronto", "1"),
    ("AU", 4, "Australia/Sydney", "61"),
    ("IN", 6, "Asia/Kolkata", "91"),
    ("SG", 3, "Asia/Singapore", "65"),
    ("BR", 4, "America/Sao_Paulo", "55"),
]
COUNTRY = Weighted([(c[0], c[1]) for c in COUNTRIES])
TIME_ZONES = {c[0]: c[2] for c in COUNTRIES}
DIAL = {c[0]: c[3] for c in COUNTRIES}

INDUSTRIES = [
    # industry, weight, company-name words
    ("Software", 25, ["Software", "Systems", "Labs", "Cloud", "Analytics"]),
    ("Fintech", 15, ["Pay", "Capital", "Finance", "Ledger", "Bank"]),
    ("Healthcare", 12, ["Health", "Care", "Medical", "Clinics", "Bio"]),
    ("Manufacturing", 14, ["Industries", "Manufacturing", "Machines", "Components", "Works"]),
    ("Retail", 10, ["Retail", "Stores", "Commerce", "Brands", "Market"]),
    ("Education", 8, ["Learning", "Academy", "Education", "Campus", "Schools"]),
    ("Logistics", 10, ["Logistics", "Freight", "Shipping", "Transport", "Supply"]),
    ("Media", 6, ["Media", "Studios", "Publishing", "Digital", "Network"]),
]
INDUSTRY = Weighted([(i[0], i[1]) for i in INDUSTRIES])
INDUSTRY_WORDS = {i[0]: i[2] for i in INDUSTRIES}
NAME_HEADS = _words(
    "Blue North Silver Bright Iron Green Red Swift Clear Stone Oak River Summit Pine Nova "
    "Polar Cedar Golden Quantum Vertex Apex Atlas Harbor Pioneer Lumen Crest Maple Orbit "
    "Falcon Sierra Cobalt Ember Granite Horizon Meridian Beacon Kestrel Willow Aurora Zenith"
)
NAME_TAILS = _words("peak wind field bridge gate stack point line works wave forge light path bay")
SIZE_BAND = Weighted([("1-10", 14), ("11-50", 30), ("51-200", 28), ("201-1000", 18), ("1000+", 10)])
FREE_MAIL = ["mail.example", "inbox.example", "post.example", "webmail.example"]

TITLES = [
    # job title, weight, how much likelier than average to become an MQL
    ("CEO", 1, 1.2),
    ("CTO", 1, 1.6),
    ("CFO", 1, 1.2),
    ("VP of Marketing", 3, 1.7),
    ("VP of Engineering", 2, 1.5),
    ("VP Sales", 2, 1.4),
    ("Director of IT", 3, 1.6),
    ("Director of Operations", 3, 1.3),
    ("Director of Marketing", 3, 1.6),
    ("Head of Data", 2, 1.4),
    ("Head of Growth", 2, 1.5),
    ("Marketing Manager", 7, 1.2),
    ("IT Manager", 5, 1.2),
    ("Product Manager", 5, 1.0),
    ("Procurement Manager", 3, 1.1),
    ("Operations Manager", 4, 1.0),
    ("Sales Manager", 3, 0.9),
    ("Software Engineer", 10, 0.5),
    ("Data Engineer", 5, 0.6),
    ("DevOps Engineer", 4, 0.6),
    ("Data Analyst", 5, 0.7),
    ("Marketing Specialist", 5, 0.7),
    ("Consultant", 4, 0.6),
    ("Student", 1, 0.1),
]
TITLE = Weighted([((t, f), w) for t, w, f in TITLES])
SOURCE = Weighted(
    [
        (Source.WEB_FORM, 28),
        (Source.ORGANIC, 16),
        (Source.PAID, 15),
        (Source.SOCIAL, 10),
        (Source.EVENT, 8),
        (Source.REFERRAL, 7),
        (Source.IMPORT, 12),
        (Source.API, 4),
    ]
)
CONSENT_SOURCE = {
    Source.WEB_FORM: "web form",
    Source.ORGANIC: "web form",
    Source.PAID: "landing page",
    Source.SOCIAL: "lead-gen form",
    Source.EVENT: "badge scan",
    Source.REFERRAL: "partner referral",
    Source.IMPORT: "list import",
    Source.API: "API",
}
CONSENT = Weighted([("consent", 55), ("legitimate_interest", 39), ("none", 6)])

RECYCLE_REASONS = ["no_budget", "bad_timing", "no_project", "no_authority"]
DISQUALIFY_REASONS = ["bad_fit", "wrong_contact", "duplicate", "competitor"]
LOST_REASONS = ["Price", "Chose a competitor", "No decision", "Timing", "Missing feature"]
SALES_USERS = ["sales", "sales2"]

PAGES = Weighted(
    [
        ("/", 20),
        ("/pricing", 10),
        ("/demo", 4),
        ("/product", 10),
        ("/product/scoring", 5),
        ("/product/nurture", 5),
        ("/integrations", 4),
        ("/customers", 4),
        ("/security", 3),
        ("/about", 2),
        ("/careers", 1),
        ("/blog/lead-scoring-101", 6),
        ("/blog/mql-vs-sql", 5),
        ("/blog/gdpr-consent-for-b2b", 4),
        ("/blog/nurture-emails-that-convert", 4),
        ("/blog/state-of-fintech", 3),
        ("/lp/brand", 5),
        ("/lp/linkedin-fintech", 3),
        ("/lp/state-of-fintech", 2),
    ]
)
# Landing pages and the campaign that drives traffic to them.
LANDING = {
    "/lp/brand": "Paid search – Brand",
    "/lp/linkedin-fintech": "LinkedIn Ads",
    "/lp/state-of-fintech": "Whitepaper: State of Fintech",
    "/lp/data-security-webinar": "Q3 Webinar: Data Security",
    "/lp/berlin-expo": "Trade show Berlin",
}
KIND = Weighted(
    [
        (K.PAGE_VISIT, 560),
        (K.FORM_SUBMITTED, 50),
        (K.LANDING_PAGE_CONVERSION, 30),
        (K.CONTENT_DOWNLOAD, 70),
        (K.WEBINAR_REGISTERED, 30),
        (K.WEBINAR_ATTENDED, 18),
        (K.EVENT_REGISTERED, 14),
        (K.EVENT_ATTENDED, 9),
        (K.DEMO_REQUESTED, 8),
        (K.SOCIAL_LIKE, 60),
        (K.SOCIAL_SHARE, 20),
        (K.SOCIAL_COMMENT, 15),
        (K.SOCIAL_REPOST, 10),
    ]
)
# What a lead does at the moment it is handed off (the end of its buying burst).
INTENT = Weighted(
    [(K.DEMO_REQUESTED, 6), (K.PAGE_VISIT, 2), (K.CONTENT_DOWNLOAD, 1), (K.WEBINAR_ATTENDED, 1)]
)
FORMS = Weighted(
    [("contact-us", 3), ("newsletter-signup", 4), ("trial-signup", 2), ("whitepaper-download", 2)]
)
CONTENT = Weighted(
    [
        (("white paper", "State of Fintech"), 3),
        (("e-book", "The B2B Nurture Playbook"), 3),
        (("case study", "How Northwind doubled SQLs"), 2),
        (("checklist", "GDPR consent checklist"), 2),
        (("report", "Lead scoring benchmarks"), 1),
        (("video", "Product tour"), 1),
    ]
)
NETWORK = Weighted([("linkedin", 6), ("x", 2), ("youtube", 1)])


def _js(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


# Details shared by many rows are serialised once.
J_EMPTY = "{}"
J_FORM = {f: _js({"form": f}) for f in FORMS.values}
J_CONTENT = {c: _js({"content_type": c[0], "title": c[1]}) for c in CONTENT.values}
J_NETWORK = {n: _js({"network": n}) for n in NETWORK.values}
J_CSAT = {a: _js({"answer": a}) for a in range(1, 6)}
J_HARD = _js({"bounce_type": "hard"})
J_WEBINAR = _js({"webinar": "Data Security in Regulated Industries"})
J_PRODUCT_WEBINAR = _js({"webinar": "Monthly product tour"})
J_TRADE_SHOW = _js({"event": "Trade show Berlin"})
J_MEETUP = _js({"event": "Customer meetup"})


@dataclass
class Windows:
    """Days (since the year's start) when campaign-driven activities can happen."""

    webinar: tuple[int, int]  # registration opens, webinar day
    trade_show: tuple[int, int]  # registration opens, show day
    linkedin: tuple[int, int]
    whitepaper: tuple[int, int]
    anniversary_from: int
    follow_up_from: int


@dataclass
class Story:
    """A contact's generated year. Activity tuples: (at, kind, campaign name, url, details)."""

    steps: list[tuple] = field(default_factory=list)  # (stage, at, user, system, reason, act)
    activities: list[tuple] = field(default_factory=list)
    reopenings: list[tuple] = field(default_factory=list)  # (round, at, activity index)
    deal: tuple | None = None  # (created, status, closed, amount, lost reason)
    owner: str | None = None
    email_status: str = "active"


# Stories forced onto the first contacts so that even a tiny demo shows every path.
SHOWCASE = [
    {"mql": True, "accept": True, "opp": True, "won": True, "churn": True},
    {"mql": True, "accept": False, "recycle": True, "reopen": True, "requal": True},
    {"mql": True, "accept": True, "opp": True, "won": True, "churn": False},
    {"mql": True, "accept": False, "recycle": False},
    {"mql": True, "accept": False, "recycle": True, "reopen": True, "requal": False},
    {"mql": True, "accept": False, "recycle": True, "reopen": False},
    {"mql": True, "accept": True, "opp": True, "won": False, "lost": True},
    {"mql": True, "accept": True, "opp": False},
    {"mql": False},
]


def story_make(
    rng: Random,
    *,
    created: datetime,
    now: datetime,
    start: datetime,
    propensity: float,
    source: str,
    win: Windows,
    forced: dict | None = None,
) -> Story:
    """Generate one contact's lifecycle story, deal and activities."""
    st = Story()
    force = forced or {}
    pace = 0.5 if forced else 1.0

    def chance(key: str, p: float) -> bool:
        return force[key] if key in force else rng.random() < p

    def later(t: datetime, lo: float, hi: float) -> datetime:
        return t + DAY * (pace * rng.uniform(lo, hi))

    def act(at: datetime, kind: str) -> int:
        st.activities.append(_decorate(rng, kind, at, (at - start).days, win))
        return len(st.activities) - 1

    st.steps.append((S.LEAD, created, None, "import", "created", None))
    _first_touch(rng, st, created, source, start, win)
    t = created
    mqls = 0
    if chance("mql", min(0.9, 0.16 * propensity)):
        t = later(t, 2, 60)
        cycle = 0
        while t < now:
            st.owner = st.owner or SALES_USERS[rng.random() < 0.45]
            _buying_burst(rng, st, created, t)
            st.steps.append((S.MQL, t, None, "scoring", "score_threshold", act(t, INTENT(rng))))
            mqls += 1
            decided = later(t, 0.2, 10)
            if decided >= now:
                break
            suffix = "2" if cycle else ""
            if chance("accept" + suffix, 0.6):
                st.steps.append((S.SQL, decided, st.owner, "", "accepted", None))
                _sales_path(rng, st, decided, now, chance, later)
                break
            if not chance("recycle" + suffix, 0.7):
                reason = DISQUALIFY_REASONS[rng.randrange(4)]
                st.steps.append((S.DISQUALIFIED, decided, st.owner, "", reason, None))
                break
            reason = RECYCLE_REASONS[rng.randrange(4)]
            st.steps.append((S.RECYCLED, decided, st.owner, "", reason, None))
            if not chance("reopen" + suffix, 0.35):
                break
            reopen_at = later(decided, 7, 90)
            if reopen_at >= now:
                break
            _reopen(rng, st, reopen_at, start, win)
            if cycle or not chance("requal", 0.45):
                break
            t, cycle = later(reopen_at, 1, 20), 1
    _fill(rng, st, created, now, start, win, busy=mqls > 0)
    return st


def _buying_burst(rng, st: Story, created: datetime, t: datetime) -> None:
    """The week of buying intent before a hand-off at ``t``: the pricing page on three to
    five days, often the contact-us form, then (at ``t``, the caller's) a demo request or
    the like. Strong on purpose: the scoring demo's rules replay it (scoring.replay), and a
    hand-off marked "score threshold" must come when the ledger got there — a burst of
    blog visits, as this used to be, left most MQLs far below the threshold."""
    for day in sorted(rng.sample(range(1, 7), rng.randint(3, 5)), reverse=True):
        at = max(created, t - DAY * (day + rng.random() * 0.5))
        st.activities.append((at, K.PAGE_VISIT, None, SITE + "/pricing", J_EMPTY))
    if rng.random() < 0.6:
        at = max(created, t - DAY * rng.uniform(0.1, 0.9))
        st.activities.append(
            (at, K.FORM_SUBMITTED, None, f"{SITE}/forms/contact-us", J_FORM["contact-us"])
        )


def _sales_path(rng, st: Story, t: datetime, now: datetime, chance, later) -> None:
    if not chance("opp", 0.65):
        return
    t = later(t, 3, 30)
    if t >= now:
        return
    amount = round(min(200_000, max(5_000, rng.lognormvariate(10.1, 0.75))), -2)
    st.steps.append((S.OPPORTUNITY, t, st.owner, "", "deal_created", None))
    closed = later(t, 14, 90)
    if closed >= now:
        st.deal = (t, "open", None, amount, "")
        return
    if chance("won", 0.45):
        st.deal = (t, "won", closed, amount, "")
        st.steps.append((S.CUSTOMER, closed, st.owner, "", "deal_won", None))
        st.activities.append(
            (closed, K.PURCHASE, None, "", _js({"amount": amount, "currency": "EUR"}))
        )
        churn = later(closed, 60, 240)
        if chance("churn", 0.15) and churn < now:
            st.steps.append((S.CHURNED, churn, None, "billing", "contract_cancelled", None))
        end = st.steps[-1][1] if st.steps[-1][0] == S.CHURNED else now
        answer_at = closed + DAY * rng.uniform(20, 60)
        while answer_at < end:
            score = 5 - min(4, int(rng.expovariate(0.9)))
            st.activities.append((answer_at, K.CSAT_ANSWER, None, "", J_CSAT[score]))
            answer_at += DAY * rng.uniform(60, 120)
    elif chance("lost", 0.75):
        st.deal = (t, "lost", closed, amount, LOST_REASONS[rng.randrange(len(LOST_REASONS))])
        st.steps.append((S.RECYCLED, closed, st.owner, "", "deal_lost", None))
    else:
        st.deal = (t, "open", None, amount, "")


def _reopen(rng, st: Story, at: datetime, start: datetime, win: Windows) -> None:
    """A recycled contact engages again: the recycle nurture brought it back to the site."""
    rounds = sum(1 for s in st.steps if s[0] == S.RECYCLED)
    kind = (K.PAGE_VISIT, K.CONTENT_DOWNLOAD, K.WEBINAR_REGISTERED)[rng.randrange(3)]
    row = list(_decorate(rng, kind, at, (at - start).days, win))
    row[2] = "Recycle – Not ready"
    st.activities.append(tuple(row))
    st.reopenings.append((rounds, at, len(st.activities) - 1))


def _first_touch(rng, st: Story, at: datetime, source: str, start: datetime, win: Windows) -> None:
    """The activity by which the contact arrived (campaign-tagged when a campaign brought it)."""
    day = (at - start).days
    if source == Source.WEB_FORM:
        st.activities.append(_decorate(rng, K.FORM_SUBMITTED, at, day, win))
    elif source == Source.PAID:
        lp = (
            "/lp/linkedin-fintech" if _in(day, win.linkedin) and rng.random() < 0.4 else "/lp/brand"
        )
        st.activities.append((at, K.LANDING_PAGE_CONVERSION, LANDING[lp], SITE + lp, J_EMPTY))
    elif source == Source.SOCIAL:
        st.activities.append(_decorate(rng, K.SOCIAL_COMMENT, at, day, win))
    elif source == Source.EVENT:
        kind = K.WEBINAR_REGISTERED if rng.random() < 0.4 else K.EVENT_REGISTERED
        st.activities.append(_decorate(rng, kind, at, day, win))
    elif source in (Source.ORGANIC, Source.REFERRAL):
        path = "/?ref=partner" if source == Source.REFERRAL else "/blog/lead-scoring-101"
        st.activities.append((at, K.PAGE_VISIT, None, SITE + path, J_EMPTY))


def _in(day: int, window: tuple[int, int]) -> bool:
    return window[0] <= day <= window[1]


def _decorate(rng: Random, kind: str, at: datetime, day: int, win: Windows) -> tuple:
    """URL, details and campaign of an activity of ``kind`` on ``day`` of the year."""
    if kind == K.PAGE_VISIT:
        path = PAGES(rng)
        campaign = LANDING.get(path)
        if campaign == "LinkedIn Ads" and not _in(day, win.linkedin):
            campaign = None
        elif campaign is None and path.startswith("/blog/") and rng.random() < 0.25:
            campaign = "Newsletter"
        return (at, kind, campaign, SITE + path, J_EMPTY)
    if kind == K.FORM_SUBMITTED:
        form = FORMS(rng)
        campaign = {"newsletter-signup": "Newsletter"}.get(form)
        if form == "whitepaper-download" and day >= win.whitepaper[0]:
            campaign = "Whitepaper: State of Fintech"
        return (at, kind, campaign, f"{SITE}/forms/{form}", J_FORM[form])
    if kind == K.LANDING_PAGE_CONVERSION:
        lp = (
            "/lp/state-of-fintech"
            if day >= win.whitepaper[0] and rng.random() < 0.3
            else "/lp/brand"
        )
        return (at, kind, LANDING[lp], SITE + lp, J_EMPTY)
    if kind == K.CONTENT_DOWNLOAD:
        content = CONTENT(rng)
        campaign = None
        if content[1] == "State of Fintech" and day >= win.whitepaper[0]:
            campaign = "Whitepaper: State of Fintech"
        return (at, kind, campaign, f"{SITE}/resources", J_CONTENT[content])
    if kind in (K.WEBINAR_REGISTERED, K.WEBINAR_ATTENDED):
        if _in(day, win.webinar):
            return (
                at,
                kind,
                "Q3 Webinar: Data Security",
                SITE + "/lp/data-security-webinar",
                J_WEBINAR,
            )
        return (at, kind, None, SITE + "/webinars", J_PRODUCT_WEBINAR)
    if kind in (K.EVENT_REGISTERED, K.EVENT_ATTENDED):
        if _in(day, win.trade_show):
            return (at, kind, "Trade show Berlin", SITE + "/lp/berlin-expo", J_TRADE_SHOW)
        return (at, kind, None, SITE + "/events", J_MEETUP)
    if kind == K.DEMO_REQUESTED:
        campaign = "Webinar follow-up" if day >= win.follow_up_from and rng.random() < 0.3 else None
        return (at, kind, campaign, SITE + "/demo", J_FORM["contact-us"])
    # Social engagement: LinkedIn posts promoted by the LinkedIn campaign while it runs.
    network = NETWORK(rng)
    campaign = "LinkedIn Ads" if network == "linkedin" and _in(day, win.linkedin) else None
    return (at, kind, campaign, "", J_NETWORK[network])


def _fill(rng, st: Story, created, now, start, win: Windows, *, busy: bool) -> None:
    """Background engagement over the contact's life, quiet while it sits recycled."""
    life = (now - created) / (365 * DAY)
    mean = (40 if busy else 15) * (0.35 + 0.65 * life)
    span = (now - created).total_seconds()
    for _ in range(int(rng.expovariate(1 / mean))):
        at = created + timedelta(seconds=rng.random() * span)
        st.activities.append(_decorate(rng, KIND(rng), at, (at - start).days, win))
    # A recycled contact is quiet until it re-engages (or for good): the first engagement
    # after a recycle is what marks it re-opened, so background activity must not pre-empt it.
    quiet = []
    for i, step in enumerate(st.steps):
        if step[0] == S.RECYCLED:
            until = st.steps[i + 1][1] if i + 1 < len(st.steps) else now
            reopen = next((r for r in st.reopenings if step[1] <= r[1] <= until), None)
            quiet.append((step[1], reopen[1] if reopen else until))
    if quiet:
        keep = {r[2] for r in st.reopenings}
        st.activities = [
            a if j in keep or not any(q0 <= a[0] < q1 for q0, q1 in quiet) else None
            for j, a in enumerate(st.activities)
        ]
    # Emails: a few addresses end up unsubscribed, hard-bounced or complaining.
    r = rng.random()
    if r < 0.03:
        at = created + timedelta(seconds=rng.random() * span)
        kind, details, status = (
            (K.EMAIL_UNSUBSCRIBED, J_EMPTY, "unsubscribed")
            if r < 0.016
            else (K.EMAIL_BOUNCED, J_HARD, "hard_bounced")
            if r < 0.027
            else (K.EMAIL_COMPLAINED, J_EMPTY, "complained")
        )
        st.activities.append((at, K.EMAIL_SENT, "Newsletter", "", J_EMPTY))
        st.activities.append((min(at + timedelta(minutes=5), now), kind, "Newsletter", "", details))
        st.email_status = status

"""Daily rollups that serve the reports which would otherwise scan the activity table.

Design (issue 8, METRICS.md "Email and program engagement"):

* Unique-contact email figures are counted **per email** (one message to one contact), so
  "contacts with ≥1 open of the email" is "emails with ≥1 open". Each email is counted
  once per metric, on the site-time-zone day of its *first* qualifying event (first
  human open-or-click, first click, first bounce, first hard bounce, first unsubscribe,
  first complaint, first machine open, first click the goal action followed — a
  conversion). A click is a person's (not flagged as a machine's) on any link but the
  unsubscribe link (``crm.models.activities.click_q``). Because every email lands in
  exactly one day per metric, the daily rows can be **summed over any period** and still
  count unique contacts per email correctly. Choice: an email opened both before and
  inside a period counts in the period of its first open only.
* An email is identified by ``(contact, message_id)``; events without a message id fall
  back to ``(contact, campaign)``.
* Rows are keyed by day × campaign × source (× nurture step), with the campaign's channel
  stored beside it, so period/campaign/channel/source filters read a few thousand rows
  (365 days × campaigns × sources) through the ``(day, campaign_id)`` index instead of
  20M activities. Segment and owner filters are not dimensions: those queries fall back
  to the raw activities (documented in reports.metrics.email).
* ``campaign_id``/``step_id`` are plain integers with 0 for "none" (no FK: a rollup must
  not lock campaigns during ingestion, and 0 keeps the unique key free of NULLs).
* :class:`StageDaily` counts lifecycle entries per day × from → to stage × source ×
  acquiring campaign (entries are summable; unique-contact stage counts read the
  transition table through its ``(to_stage, at)`` index).

The rollups are kept current by ``reports.handlers`` (per batch, set-based, idempotent:
the affected day × campaign rows are recomputed from raw data), rebuilt by
``reports.rollups.rollups_rebuild`` and checked daily by ``reports.tasks.reconcile_rollups``.
"""

from django.db import models


class EmailDaily(models.Model):
    day = models.DateField()
    campaign_id = models.IntegerField(default=0)
    channel = models.CharField(max_length=20, blank=True)
    source = models.CharField(max_length=20, blank=True)
    step_id = models.IntegerField(default=0)
    sent = models.IntegerField(default=0)
    bounced = models.IntegerField(default=0)
    hard_bounced = models.IntegerField(default=0)
    unique_opens = models.IntegerField(default=0)
    machine_opens = models.IntegerField(default=0)
    unique_clicks = models.IntegerField(default=0)
    unsubscribed = models.IntegerField(default=0)
    complaints = models.IntegerField(default=0)
    conversions = models.IntegerField(default=0)
    social_likes = models.IntegerField(default=0)
    social_shares = models.IntegerField(default=0)
    social_comments = models.IntegerField(default=0)
    social_reposts = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the handlers and rebuilds.
            models.UniqueConstraint(
                fields=["day", "campaign_id", "source", "step_id"], name="email_daily_key"
            )
        ]
        indexes = [
            # Email, cost and dashboard reports: a campaign's rows in a period.
            models.Index(fields=["campaign_id", "day"], name="email_daily_campaign"),
        ]

    def __str__(self) -> str:
        return f"{self.day} campaign {self.campaign_id} {self.source}"


class StageDaily(models.Model):
    day = models.DateField()
    from_stage = models.CharField(max_length=20, blank=True)
    to_stage = models.CharField(max_length=20)
    source = models.CharField(max_length=20, blank=True)
    campaign_id = models.IntegerField(default=0)  # the contact's acquiring campaign
    entries = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the handlers and rebuilds.
            models.UniqueConstraint(
                fields=["day", "from_stage", "to_stage", "source", "campaign_id"],
                name="stage_daily_key",
            )
        ]
        indexes = [
            # Funnel flow mode and leads report: entries into a stage over a period.
            models.Index(fields=["to_stage", "day"], name="stage_daily_stage"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.from_stage}→{self.to_stage}: {self.entries}"


class EmailStepDaily(models.Model):
    """Per nurture step email facts: the ``EmailDaily`` counts of the emails that belong to a
    ``nurture.EmailSend`` (by message id), keyed day × campaign × source × step.

    Same per-email first-event rule as ``EmailDaily``, so rows sum over any period. Kept by
    ``reports.facts`` (separate from the campaign rollup's upkeep in ``reports.rollups``).
    """

    day = models.DateField()
    campaign_id = models.IntegerField(default=0)
    channel = models.CharField(max_length=20, blank=True)
    source = models.CharField(max_length=20, blank=True)
    step_id = models.IntegerField()
    sent = models.IntegerField(default=0)
    bounced = models.IntegerField(default=0)
    hard_bounced = models.IntegerField(default=0)
    unique_opens = models.IntegerField(default=0)
    machine_opens = models.IntegerField(default=0)
    unique_clicks = models.IntegerField(default=0)
    unsubscribed = models.IntegerField(default=0)
    complaints = models.IntegerField(default=0)
    conversions = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the facts upkeep and rebuilds.
            models.UniqueConstraint(
                fields=["day", "campaign_id", "source", "step_id"], name="email_step_daily_key"
            )
        ]
        indexes = [
            # Email report per-step table: a campaign's step rows in a period.
            models.Index(fields=["campaign_id", "day"], name="email_step_daily_campaign"),
        ]

    def __str__(self) -> str:
        return f"{self.day} campaign {self.campaign_id} step {self.step_id}"


# The from-stages of the funnel's forward steps but ``lead`` (whose step is ``lead_at``'s).
VELOCITY_STAGES = ["mql", "sql", "opportunity"]


class TransitionFact(models.Model):
    """Per lifecycle transition: the funnel facts a report would otherwise probe per contact.

    Kept by ``reports.lifecycle_facts`` on every stage change (recomputed for the changed
    contacts), rebuilt by ``lifecycle_facts_rebuild`` and checked by the daily reconciliation.

    * ``prev_same_at``: the contact's previous entry into ``to_stage`` (ordered by time, id);
      a transition is its contact's first entry into the stage within a period exactly when
      ``prev_same_at`` is null or before the period start (funnel stage conversion cohort).
    * ``next_at``: the contact's first entry into the next funnel stage at or after ``at``
      (METRICS.md "stage conversion" and "time in stage").
    * ``lead_at``: on ``mql`` entries, the contact's ``created_at`` when it is a new lead
      (not suppressed at creation) and this is its first ``mql`` entry at or after creation:
      the lead → MQL step of the new leads created at ``lead_at``.
    * ``next_us`` / ``lead_us``: ``next_at - at`` / ``at - lead_at`` in whole microseconds
      (null with their timestamp): the funnel velocity percentiles sort these plain
      integers in the database instead of intervals (or every duration in Python).
    * ``from_stage`` and ``prev_pair_at``: the transition's from-stage and the contact's
      previous transition from the same stage into the same stage (by time, id); a
      transition is its contact's first such move within a period exactly when
      ``prev_pair_at`` is null or before the period start (funnel drop-offs: unique
      contacts recycled / disqualified from each stage, summed per day in ``DropDaily``).
    """

    transition = models.OneToOneField(
        "crm.LifecycleTransition", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    # No constraint: the transition's cascade removes the row; this only serves joins for
    # the contact filters (source, owner, segment, acquiring campaign).
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    to_stage = models.CharField(max_length=20)
    at = models.DateTimeField()
    prev_same_at = models.DateTimeField(null=True)
    next_at = models.DateTimeField(null=True)
    lead_at = models.DateTimeField(null=True)
    next_us = models.BigIntegerField(null=True)
    lead_us = models.BigIntegerField(null=True)
    from_stage = models.CharField(max_length=20, blank=True, default="")
    prev_pair_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [
            # Funnel flow (filtered), customers' CLV cohorts: entries into a stage in a period.
            models.Index(fields=["to_stage", "at"], name="transition_fact_stage"),
            # Funnel velocity (metrics.funnel.conversions): the period's entries into a stage
            # that reached the next one, read index-only (first-in-period test, end bound
            # and the duration all in the index).
            models.Index(
                fields=["to_stage", "at"],
                include=["prev_same_at", "next_at", "next_us"],
                condition=models.Q(next_at__isnull=False, to_stage__in=VELOCITY_STAGES),
                name="transition_fact_velocity",
            ),
            # Funnel lead → MQL step: the first MQL entries of the leads created in a period,
            # with their time and duration (index-only).
            models.Index(
                fields=["lead_at"],
                include=["at", "lead_us"],
                condition=models.Q(to_stage="mql", lead_at__isnull=False),
                name="transition_fact_lead",
            ),
        ]

    def __str__(self) -> str:
        return f"transition {self.transition_id} → {self.to_stage}"


class TransitionCredit(models.Model):
    """Attribution inputs per stage change into ``mql``/``sql``/``customer`` and campaign.

    One row per campaign among the change's touches (METRICS.md "attribution": campaign-
    tagged activities at or before the change, ordered by time and id): ``touches`` of that
    campaign, ``n`` touches in all, and whether the first / last touch is this campaign's.
    A change without a touch has one row with ``campaign_id`` 0 and ``n`` 0. Every model's
    credit follows from these (see ``reports.metrics.attribution.credits_from_facts``), so
    reports group a few thousand rows instead of reading every contact's touches.
    """

    transition = models.ForeignKey(
        "crm.LifecycleTransition", on_delete=models.CASCADE, related_name="+"
    )
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    to_stage = models.CharField(max_length=20)
    at = models.DateTimeField()
    campaign_id = models.IntegerField(default=0)
    touches = models.IntegerField(default=0)
    n = models.IntegerField(default=0)
    first = models.BooleanField(default=False)
    last = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["transition", "campaign_id"], name="credit_key")
        ]
        indexes = [
            # Cost per MQL, dashboard: credits of the entries into a stage in a period.
            models.Index(fields=["to_stage", "at"], name="transition_credit_stage"),
        ]

    def __str__(self) -> str:
        return f"transition {self.transition_id} campaign {self.campaign_id}"


class LandingVisitFact(models.Model):
    """Per landing page, contact, site-time-zone day and event kind (``v`` visit, ``s`` form
    submission carrying the page's url): what the landing-page report needs to count unique
    visitors and converted visitors of any period by a plain grouped count (no DISTINCT).

    * ``prev_day``: the contact's previous day with the same kind for the url; a row is its
      contact's first of that kind in a period exactly when ``prev_day`` is before the
      period (or null), so "unique visitors" counts such visit rows.
    * ``other_day``: the contact's latest day with the other kind for the url — at or before
      ``day`` for a submission, strictly before it for a visit. A first-in-period row whose
      ``other_day`` is in the period is the moment its contact has both a visit and a
      submission in the period; exactly one row per converted visitor satisfies it.

    Kept by ``reports.lifecycle_facts`` (recomputed per touched url × contact), rebuilt
    and reconciled with the other lifecycle facts.
    """

    url = models.CharField(max_length=2000)
    # Its index (the foreign key's) serves the upkeep's read of the batch's contacts' rows
    # (reports.landing_facts) and the contact's cascade. The landing-page report reads the
    # day rows (LandingDaily/LandingSpan), so no index on day/prev_day: each index here is
    # paid by every fact row an engagement batch writes.
    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    kind = models.CharField(max_length=1)  # v | s
    prev_day = models.DateField(null=True)
    other_day = models.DateField(null=True)

    def __str__(self) -> str:
        return f"{self.day} {self.kind} contact {self.contact_id}"


class ReopenedDayFact(models.Model):
    """Per contact and site-time-zone day on which it recorded an engagement activity while
    in ``recycled`` (METRICS.md "re-opened leads"), with ``prev_day``, its previous such
    day: the contact's first such day within a period is the row whose ``prev_day`` is
    before the period (or null), so re-opened leads of any period or month are a plain
    count. Kept by ``reports.reopened_facts`` (recomputed per contact that was ever
    recycled, when it engages or changes stage).
    """

    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    prev_day = models.DateField(null=True)

    class Meta:
        constraints = [
            # Upkeep replaces a contact's rows; one row per contact and day.
            models.UniqueConstraint(fields=["contact", "day"], name="reopened_day_key")
        ]
        indexes = [
            # Leads report and dashboard: the first-in-period rows of a period.
            models.Index(fields=["day", "prev_day"], name="reopened_day_period"),
        ]

    def __str__(self) -> str:
        return f"{self.day} contact {self.contact_id}"


class DealCredit(models.Model):
    """Attribution inputs per won deal and campaign (METRICS.md "attributed revenue"): as
    ``TransitionCredit``, over the contact's campaign touches at or before ``closed_at``,
    with the deal's ``amount`` (a won deal can no longer change: crm.sales). Kept by
    ``reports.deal_facts``; a won deal without rows yet (won while its contact already
    was a customer: no stage change to hook) is credited from raw data until the
    reconciliation adds them.
    """

    deal = models.ForeignKey("crm.Deal", on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    closed_at = models.DateTimeField()
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    campaign_id = models.IntegerField(default=0)
    touches = models.IntegerField(default=0)
    n = models.IntegerField(default=0)
    first = models.BooleanField(default=False)
    last = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["deal", "campaign_id"], name="deal_credit_key")
        ]
        indexes = [
            # Revenue and cost reports: credits of the deals won in a period.
            models.Index(fields=["closed_at"], name="deal_credit_closed"),
        ]

    def __str__(self) -> str:
        return f"deal {self.deal_id} campaign {self.campaign_id}"


class NewLeadDaily(models.Model):
    """New leads per site-time-zone day (METRICS.md "new leads": contacts created that day,
    except those suppressed when created — both facts frozen at creation). Serves the
    unfiltered dashboard and leads figures; any contact filter reads the contacts. Kept by
    ``reports.lifecycle_facts`` from the creation transitions (``'' → stage``, recorded by
    every path that creates contacts), rebuilt and reconciled per day.
    """

    day = models.DateField(unique=True)  # upsert key; period sums read it as a range
    new_leads = models.IntegerField(default=0)
    # Of these new leads, how many have ever entered each stage (reports.cohort_facts;
    # funnel cohort mode subtracts those whose first entry came at or after the report end).
    mql = models.IntegerField(default=0)
    sql = models.IntegerField(default=0)
    opportunity = models.IntegerField(default=0)
    customer = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.day}: {self.new_leads}"


class CohortReachDaily(models.Model):
    """New leads per creation day, funnel stage and the site-time-zone day of their first
    entry into it (METRICS.md funnel cohort mode: of the leads created in the period, how
    many reached each stage by the report end). Funnel cohort counts are the period's
    ``NewLeadDaily`` stage totals minus these rows with ``reached_day`` at or after the
    report end (none for a period ending today). Kept by ``reports.cohort_facts`` from
    the first-entry ``TransitionFact`` rows of the changed contacts (signed deltas),
    rebuilt and reconciled with them.
    """

    day = models.DateField()
    stage = models.CharField(max_length=20)
    reached_day = models.DateField()
    leads = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep.
            models.UniqueConstraint(
                fields=["stage", "reached_day", "day"], name="cohort_reach_daily_key"
            )
        ]
        # The unique key's index serves the funnel's read: a stage's first entries at or
        # after the report end (a range of reached_day), of leads created in the period.

    def __str__(self) -> str:
        return f"{self.day} → {self.stage} on {self.reached_day}: {self.leads}"


class DropDaily(models.Model):
    """Funnel drop-offs per site-time-zone day, from-stage, ``recycled``/``disqualified``
    and ``prev_day``: the day of the same contact's previous move between the same two
    stages (``TransitionFact.prev_pair_at``), or 0001-01-01 for its first. A move is its
    contact's first such within a period exactly when ``prev_day`` is before the period
    start (periods are whole site days), so unique contacts recycled / disqualified from a
    stage are a sum of the period's rows (METRICS.md funnel drop-offs). Kept by
    ``reports.drop_facts`` from the changed ``TransitionFact`` rows (signed deltas),
    rebuilt and reconciled with them.
    """

    day = models.DateField()
    from_stage = models.CharField(max_length=20, blank=True)
    to_stage = models.CharField(max_length=20)
    prev_day = models.DateField()
    moves = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the funnel's read of a period's
            # rows (a range of day).
            models.UniqueConstraint(
                fields=["day", "from_stage", "to_stage", "prev_day"], name="drop_daily_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.from_stage}→{self.to_stage} (prev {self.prev_day}): {self.moves}"


class NurturedDaily(models.Model):
    """Enrolled new leads per site-time-zone creation day and nurture group (METRICS.md
    line 51, nurtured vs non-nurtured): ``group`` is ``nurtured`` (≥1 enrollment not held
    out) or ``held_out`` (enrolled, but only ever held out — in neither report group);
    ``opportunity`` counts those that ever entered ``opportunity``. The unfiltered funnel
    sums the period's rows and subtracts :class:`NurturedReachDaily` rows first reached at
    or after its end; never-enrolled = the cohort's new leads minus both groups. Kept by
    ``reports.nurtured_facts`` (enrollments created, first opportunity entries moved),
    rebuilt and reconciled with the funnel cohort rows.
    """

    day = models.DateField()
    group = models.CharField(max_length=10)
    leads = models.IntegerField(default=0)
    opportunity = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the funnel's period sum (a range
            # of day within each group is read whole: two groups × the period's days).
            models.UniqueConstraint(fields=["day", "group"], name="nurtured_daily_key")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.group}: {self.leads}"


class NurturedReachDaily(models.Model):
    """Enrolled new leads per creation day, nurture group and the site-time-zone day of
    their first entry into ``opportunity`` (see :class:`NurturedDaily`)."""

    day = models.DateField()
    group = models.CharField(max_length=10)
    reached_day = models.DateField()
    leads = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the funnel's read of the first
            # entries at or after the report end (a range of reached_day).
            models.UniqueConstraint(
                fields=["reached_day", "group", "day"], name="nurtured_reach_daily_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.group} → opportunity on {self.reached_day}: {self.leads}"


class LeadScoreFact(models.Model):
    """Per new lead created in a closed (frozen) month: its score at the end of its creation
    month (METRICS.md "lead score profile of new leads" and "Scores over time": the sum of
    its ledger entries before that month end). Rows exist exactly for the new leads of the
    months in ``LeadScoreMonth``; kept by ``reports.score_facts`` (a closed month's score
    only moves when an entry dated before its end arrives late: a back-dated activity or
    recycle), so the upkeep knows each lead's previous score when it moves its count in
    ``LeadScoreDaily``.
    """

    contact = models.OneToOneField(
        "crm.Contact", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    day = models.DateField()  # creation day (site time zone)
    score = models.IntegerField()

    def __str__(self) -> str:
        return f"contact {self.contact_id}: {self.score}"


class LeadScoreDaily(models.Model):
    """New leads per creation day and month-end score (value counts of ``LeadScoreFact``):
    the leads report's score profile of a frozen month is a grouped sum of these rows
    (days × distinct scores), not a ledger sum per new lead."""

    day = models.DateField()
    score = models.IntegerField()
    leads = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; the leads report reads a period as its day range.
            models.UniqueConstraint(fields=["day", "score"], name="lead_score_daily_key")
        ]

    def __str__(self) -> str:
        return f"{self.day} score {self.score}: {self.leads}"


class LeadScoreMonth(models.Model):
    """A calendar month (its first day) whose new leads' month-end scores are frozen into
    ``LeadScoreFact``/``LeadScoreDaily``. Months not listed (the current one, or any before
    the freeze job ran) are served from the ledger."""

    month = models.DateField(unique=True)  # the leads report reads the period's months
    frozen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.month:%Y-%m}"


class StageEntryDaily(models.Model):
    """Lifecycle entries per site-time-zone day, from → to stage and ``prev_day``: the day
    of the same contact's previous entry into ``to_stage`` (by time, then id), or
    :data:`reports.stage_facts.NO_PREV` (0001-01-01) for its first ever. Entries in a
    period are the period's rows summed; an entry is its contact's first into the stage
    within the period exactly when ``prev_day`` is before the period start (periods are
    whole site days), so unique contacts are the same sum over those rows (METRICS.md
    "MQLs", "SQLs", "MQL acceptance rate", funnel flow mode). The same fact per transition
    as ``TransitionFact.prev_same_at``, summed; re-entries are few, so a year is a few
    thousand rows. Kept by ``reports.stage_facts`` (signed deltas per stage change),
    rebuilt and reconciled per day there.
    """

    day = models.DateField()
    from_stage = models.CharField(max_length=20, blank=True)
    to_stage = models.CharField(max_length=20)
    prev_day = models.DateField()
    entries = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep and rebuilds.
            models.UniqueConstraint(
                fields=["day", "from_stage", "to_stage", "prev_day"], name="stage_entry_daily_key"
            )
        ]
        indexes = [
            # Dashboard, leads, funnel flow, customers: a stage's entries over a period.
            models.Index(fields=["to_stage", "day"], name="stage_entry_daily_stage"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.day} {self.from_stage}→{self.to_stage} (prev {self.prev_day}): {self.entries}"
        )


class StagePopulationDaily(models.Model):
    """How many contacts started and stopped being in a stage per site-time-zone day, so
    the contacts in each stage at the start of day D are Σ over days before D of
    ``entered − left`` (customers report: open leads and customers at the period start).

    A contact is in stage S at instant D when it was created before D and its latest
    transition before D (by time, then id) went to S; ``stage`` ``""`` stands for a
    contact created before D with no transition before D (an open lead). Each transition
    is in its stage from its day (or its contact's creation day, if later) until the day
    of the contact's next transition: ``entered`` on the first, ``left`` on the second,
    nothing when they are the same day. Kept by ``reports.stage_facts`` with
    :class:`StageEntryDaily`.
    """

    day = models.DateField()
    stage = models.CharField(max_length=20, blank=True)
    entered = models.IntegerField(default=0)
    left = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the customers report's read of
            # every day before the period start (a range of day).
            models.UniqueConstraint(fields=["day", "stage"], name="stage_population_daily_key")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.stage or 'untouched'}: +{self.entered} -{self.left}"


class CampaignLeadDaily(models.Model):
    """New leads per site-time-zone creation day and acquiring campaign (METRICS.md "new
    leads", cost per new lead: contacts created that day, not suppressed at creation,
    ``Contact.acquired_by`` set). Serves the cost report without contact filters; any
    contact filter reads the contacts. Kept by ``reports.credit_facts`` (the creation days
    of created contacts and of changed acquisitions recounted), rebuilt and reconciled.
    """

    day = models.DateField()
    campaign_id = models.IntegerField()
    new_leads = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the cost report's period sum (a
            # range of day).
            models.UniqueConstraint(fields=["day", "campaign_id"], name="campaign_lead_daily_key")
        ]

    def __str__(self) -> str:
        return f"{self.day} campaign {self.campaign_id}: {self.new_leads}"


class CreditDaily(models.Model):
    """``TransitionCredit`` rows summed per site-time-zone day, stage, campaign and ``n``
    (METRICS.md "attribution"; see ``reports.credit_facts``). Changes with at most
    ``FOLD_N`` touches are folded into ``n`` 0 with their linear and U-shaped credits as
    exact integer numerators over ``credit_facts.DENOMINATOR``; longer ones keep their
    ``n`` and the summed shape figures (``touches``, ``first``, ``last``, ``changes``).
    Serves the cost report and chart without contact filters.
    """

    day = models.DateField()
    to_stage = models.CharField(max_length=20)
    campaign_id = models.IntegerField(default=0)
    n = models.IntegerField(default=0)
    changes = models.IntegerField(default=0)
    first = models.IntegerField(default=0)
    last = models.IntegerField(default=0)
    touches = models.IntegerField(default=0)
    linear = models.BigIntegerField(default=0)
    u_shaped = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the cost report's read of a
            # stage's rows over a period (a range of day within to_stage).
            models.UniqueConstraint(
                fields=["to_stage", "day", "campaign_id", "n"], name="credit_daily_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.to_stage} campaign {self.campaign_id} n {self.n}"


class WonDealFact(models.Model):
    """Per won deal (kept with its ``DealCredit`` rows by ``reports.deal_facts``): its close
    time and amount, and whether its contact had a campaign touch before the deal was
    created (METRICS.md "marketing-influenced revenue"), so the revenue report and the
    dashboard sum the period's rows instead of probing the activities per deal."""

    deal = models.OneToOneField(
        "crm.Deal", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    # No constraint: joins for the contact filters only (as TransitionFact).
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    closed_at = models.DateTimeField()
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    influenced = models.BooleanField(default=False)

    class Meta:
        indexes = [
            # Revenue report, dashboard: the deals won in a period.
            models.Index(fields=["closed_at"], name="won_deal_fact_closed"),
        ]

    def __str__(self) -> str:
        return f"deal {self.deal_id}: {'influenced' if self.influenced else 'not influenced'}"


class SalesCycleFact(models.Model):
    """Per entry into ``customer`` with an earlier-or-same-time ``sql`` entry: the latest
    such ``sql_at`` (METRICS.md "sales cycle length"). Kept by ``reports.credit_facts``
    (recomputed per contact when it enters ``sql`` or ``customer``), rebuilt and
    reconciled with the lifecycle facts."""

    transition = models.OneToOneField(
        "crm.LifecycleTransition", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    # No constraint: joins for the contact filters; its index serves the upkeep's
    # replacement of a contact's rows.
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    at = models.DateTimeField()
    sql_at = models.DateTimeField()

    class Meta:
        indexes = [
            # Revenue report: the customer entries of a period.
            models.Index(fields=["at"], name="sales_cycle_fact_at"),
        ]

    def __str__(self) -> str:
        return f"transition {self.transition_id}: sql at {self.sql_at}"


class DealCreditDaily(models.Model):
    """``DealCredit`` rows summed per site-time-zone day of ``closed_at``, campaign and ``n``
    (METRICS.md "attributed revenue"; see ``reports.deal_facts``), amounts in cents. Rows
    with at most ``credit_facts.FOLD_N`` touches fold into ``n`` 0, their amount-weighted
    linear and U-shaped credits as exact integer numerators over 100 ×
    ``credit_facts.DENOMINATOR``, each kept as three 31-bit limbs (``_0`` + ``_1``·2³¹ +
    ``_2``·2⁶²: an amount times a numerator exceeds 64 bits, a sum of limbs does not);
    longer ones keep their ``n`` and the amount-weighted shape figures. ``first`` counts
    the deals (each has one first-touch row). Serves the revenue and cost reports without
    contact filters.
    """

    day = models.DateField()
    campaign_id = models.IntegerField(default=0)
    n = models.IntegerField(default=0)
    credits = models.IntegerField(default=0)  # DealCredit rows
    first = models.IntegerField(default=0)
    last = models.IntegerField(default=0)
    amount = models.BigIntegerField(default=0)  # cents, as every figure below
    amount_first = models.BigIntegerField(default=0)
    amount_last = models.BigIntegerField(default=0)
    amount_touches = models.BigIntegerField(default=0)
    linear_0 = models.BigIntegerField(default=0)
    linear_1 = models.BigIntegerField(default=0)
    linear_2 = models.BigIntegerField(default=0)
    u_shaped_0 = models.BigIntegerField(default=0)
    u_shaped_1 = models.BigIntegerField(default=0)
    u_shaped_2 = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the revenue and cost reports' read
            # of a period's rows (a range of day).
            models.UniqueConstraint(
                fields=["day", "campaign_id", "n"], name="deal_credit_daily_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} campaign {self.campaign_id} n {self.n}"


class CsatDaily(models.Model):
    """CSAT answers (1–5) recorded per site-time-zone day and answer (METRICS.md line 100;
    see ``reports.csat_facts``). Serves the customers report's CSAT without contact
    filters."""

    day = models.DateField()
    answer = models.SmallIntegerField()
    n = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the customers report's read of a
            # period's rows (a range of day).
            models.UniqueConstraint(fields=["day", "answer"], name="csat_daily_key")
        ]

    def __str__(self) -> str:
        return f"{self.day} answer {self.answer}: {self.n}"


# The review register's models live in their own module (reports/review/models.py).
from .review.models import ContentAsset, Review, ReviewItem  # noqa: E402, F401


class HoldoutDaily(models.Model):
    """Program enrollments per site-time-zone entry day, program, group (``treated`` or
    ``held_out``) and ``prev_day`` — the day of the same contact's previous enrollment in
    the program and group, :data:`reports.holdout_facts.NO_PREV` (0001-01-01) for its first
    — with ``opportunity``: those whose contact ever entered ``opportunity``. Holdout lift
    (METRICS.md line 51) counts a contact once per program and group in a period: the
    rows with ``prev_day`` before the period start, summed, minus the
    :class:`HoldoutReachDaily` rows first reached at or after the end. Kept by
    ``reports.holdout_facts``, rebuilt and reconciled there.
    """

    day = models.DateField()
    program_id = models.IntegerField()
    group = models.CharField(max_length=10)
    prev_day = models.DateField()
    enrolled = models.IntegerField(default=0)
    opportunity = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the funnel's holdout lift (a range
            # of day: the period's rows, a few per program and day).
            models.UniqueConstraint(
                fields=["day", "program_id", "group", "prev_day"], name="holdout_daily_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} program {self.program_id} {self.group}: {self.enrolled}"


class HoldoutReachDaily(models.Model):
    """The enrollments of :class:`HoldoutDaily` by the site-time-zone day of their contact's
    first ``opportunity`` entry."""

    reached_day = models.DateField()
    day = models.DateField()
    program_id = models.IntegerField()
    group = models.CharField(max_length=10)
    prev_day = models.DateField()
    enrolled = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the holdout lift's read of the
            # enrollments first reached at or after the report end (a range of reached_day).
            models.UniqueConstraint(
                fields=["reached_day", "program_id", "group", "day", "prev_day"],
                name="holdout_reach_daily_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} program {self.program_id} {self.group} → {self.reached_day}"


class LandingDaily(models.Model):
    """Per landing page url, tag (``v`` visits, ``s`` form submissions, ``a`` either) and
    site-time-zone day, from each url × contact's distinct days with that tag (kept from
    ``LandingVisitFact`` by ``reports.landing_rollup``): ``firsts``, contacts whose first
    day it is; ``opened``/``closed``, consecutive day pairs (``p`` < ``d``) starting /
    ending on it. Unique contacts of a period [S, E) are the firsts in it, plus the pairs
    with ``p`` < S ≤ ``d`` (Σ over days ≥ S of ``closed − opened``), minus those that also
    have ``d`` ≥ E (:class:`LandingSpan`) — METRICS.md line 31 without a DISTINCT.
    """

    url = models.CharField(max_length=2000)
    tag = models.CharField(max_length=1)
    day = models.DateField()
    firsts = models.IntegerField(default=0)
    opened = models.IntegerField(default=0)
    closed = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the landing-page report's read of
            # the days from the period start on (a range of day).
            models.UniqueConstraint(fields=["day", "url", "tag"], name="landing_daily_key")
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.tag} {self.url}"


class LandingSpan(models.Model):
    """The consecutive day pairs (``p``, ``d``) of :class:`LandingDaily`, counted four
    times at four grains — ``mm`` (month of p, month of d), ``md`` (month of p, d),
    ``dm`` (p, month of d), ``dd`` (p, d); a month is its first day — so the pairs with
    ``p`` < S and ``d`` ≥ E (none when E is after the data) are four bounded range reads
    whatever the history: whole months outside the period by month, the partial months
    at its edges by day."""

    url = models.CharField(max_length=2000)
    tag = models.CharField(max_length=1)
    grain = models.CharField(max_length=2)
    p_key = models.DateField()
    d_key = models.DateField()
    n = models.IntegerField(default=0)

    class Meta:
        constraints = [
            # Upsert key of the upkeep; its index serves the landing-page report's four
            # reads (a grain, a range of d_key, a range of p_key checked in the index).
            models.UniqueConstraint(
                fields=["grain", "d_key", "p_key", "url", "tag"], name="landing_span_key"
            )
        ]
        indexes = [
            # Landing-page report, ``dm`` read: a few days of p_key (the start's month
            # before the start) whatever the months of d_key — the key's d_key range
            # would read every month after the period.
            models.Index(
                fields=["p_key", "d_key"], name="landing_span_dm", condition=models.Q(grain="dm")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.grain} {self.p_key}–{self.d_key} {self.tag} {self.url}"

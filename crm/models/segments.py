"""Segments: stored definitions and stored membership (compiled by crm.segments)."""

from django.conf import settings
from django.db import models
from django.db.models.lookups import GreaterThan
from django.urls import reverse


class Segment(models.Model):
    class Kind(models.TextChoices):
        DYNAMIC = "dynamic", "Dynamic (follows its definition)"
        STATIC = "static", "Static (hand-kept list)"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DYNAMIC)
    definition = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    refreshed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("crm:segment-detail", args=[self.pk])


class SegmentVersion(models.Model):
    """Every saved definition, so a change can be seen and audited."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    definition = models.JSONField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["segment", "version"], name="segment_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.segment_id} v{self.version}"


class SegmentMembership(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    contact = models.ForeignKey(
        "crm.Contact", on_delete=models.CASCADE, related_name="segment_memberships"
    )
    joined_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "contact"], name="segment_member_unique")
        ]
        indexes = [
            # "Segments of this contact" and membership-of-another-segment conditions.
            models.Index(fields=["contact", "segment"], name="membership_contact"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.segment_id}"


class TransactionId(models.Func):
    """The id of the transaction writing the row (the default of ``SegmentChange.xid``).

    PostgreSQL: ``pg_current_xact_id()``, the top-level transaction's 64-bit id (it never
    wraps around). SQLite: 0, since its write transactions run one at a time, so id order
    is already commit order there.
    """

    output_field = models.BigIntegerField()
    template = "0"

    def as_postgresql(self, compiler, connection, **extra_context):
        return "(pg_current_xact_id()::text::bigint)", []


class SettledBelow(models.Func):
    """Rows whose ``xid`` is below this are settled: no transaction still running, or yet to
    write, can add one.

    PostgreSQL: the statement snapshot's ``xmin``, the oldest transaction id still running;
    every lower id has ended, every later one is higher. It counts the reader's own
    transaction, so rows that one wrote are settled for the readers after its commit.
    SQLite: no bound, since a write transaction holds the database's only write lock from
    its first write to its commit, so what a reader sees is always a prefix of id order.
    """

    output_field = models.BigIntegerField()
    template = "9223372036854775807"

    def as_postgresql(self, compiler, connection, **extra_context):
        return "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint)", []


class Row(models.Func):
    """``(a, b)``: a row value; two compare column by column (PostgreSQL, SQLite ≥ 3.15),
    which an index on those columns serves as one range."""

    function = ""
    output_field = models.BigIntegerField()


class SegmentChangeQuerySet(models.QuerySet):
    def settled(self) -> "SegmentChangeQuerySet":
        """Changes that no transaction still in flight can come before, in log order."""
        return self.filter(xid__lt=SettledBelow())

    def after(self, position: tuple[int, int]) -> "SegmentChangeQuerySet":
        """Changes after ``position``, an ``(xid, id)`` pair, in log order."""
        xid, pk = position
        return self.filter(GreaterThan(Row("xid", "id"), Row(models.Value(xid), models.Value(pk))))

    def in_log_order(self) -> "SegmentChangeQuerySet":
        return self.order_by("xid", "id")


class SegmentChange(models.Model):
    """A join or a leave, with its time: nurture triggers on joins, reports chart members.

    Readers that follow the log with a cursor (nurture's segment triggers) read it in *log
    order*, ``(xid, id)``, and only its :meth:`~SegmentChangeQuerySet.settled` part, not in
    id order: PostgreSQL hands out ids at INSERT but rows appear at COMMIT, so a row can
    appear behind one a reader has already passed in id order, and be skipped for ever.
    Settled rows are a prefix of log order that can only grow at its end, since every
    transaction that can still add a row has a higher xid than all of them.
    """

    class Kind(models.TextChoices):
        JOINED = "joined", "Joined"
        LEFT = "left", "Left"

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="changes")
    contact = models.ForeignKey("crm.Contact", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    at = models.DateTimeField()
    xid = models.BigIntegerField(
        db_default=TransactionId(),
        editable=False,
        help_text="The writing transaction (PostgreSQL; 0 on SQLite and for rows older "
        "than this column): with id, the order in which a cursor reads the log.",
    )

    objects = SegmentChangeQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # Join/leave history chart of a segment.
            models.Index(fields=["segment", "at"], name="segment_change_time"),
            # Segment triggers: a segment's settled joins after the trigger's cursor, in log
            # order (nurture.services.enrollment), and the last one (trigger_create).
            models.Index(
                fields=["segment", "xid", "id"],
                condition=models.Q(kind="joined"),
                name="segment_change_joins",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} {self.kind} {self.segment_id}"

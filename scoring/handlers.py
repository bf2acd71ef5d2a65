"""How scoring reacts to what the core publishes (see crm.events and settings)."""

from django.db import connection
from django.utils import timezone

from crm.activity_queue import queued_activity_ids
from crm.events import handler
from crm.models import Contact

from . import engine, handoff, services
from .models import LedgerEntry, Rule
from .writes import Entry, ids_q, int_array

R = LedgerEntry.Reason
# A merge's score gain, from its "contacts merging" event (the score moves there) to its
# "contacts changed" event (the hand-off waits for the other apps' rows to move), keyed by
# the kept contact and the merge's time; both run in the merge's transaction and thread.
_merge_gains: dict[tuple[int, object], int] = {}


def _lock(contact_ids) -> list[int]:
    """Lock the contacts being scored, in id order, so a concurrent rescore chunk and this
    batch take turns instead of both appending the same adjustment."""
    return list(
        Contact.objects.select_for_update(no_key=True)
        .filter(pk__in=list(contact_ids))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


# PostgreSQL: the ids as one array literal, the rows straight from the cursor (the ORM's
# compile and per-value converters cost ~1 ms of the batch's CPU for two int columns).
# The lock is the contact row's (what ingestion and the rescore chunks take); the cached
# score comes from its row in crm_contactscore, read by a per-row primary-key probe: as a
# join, a few thousand ids (a queue drain's) made the planner hash-join a sequential scan
# of all of crm_contactscore (205 ms at 1M contacts for 3,900 ids, against 22 ms).
_LOCK_SCORES_SQL = (
    "SELECT c.id, (SELECT s.score FROM crm_contactscore s WHERE s.contact_id = c.id) "
    "FROM crm_contact c WHERE c.id = ANY(%s::bigint[]) ORDER BY c.id FOR NO KEY UPDATE OF c"
)


def _lock_scores(contact_ids) -> dict[int, int]:
    """Lock like :func:`_lock` and return the locked contacts' cached scores."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_LOCK_SCORES_SQL, [int_array(sorted(contact_ids))])
            # Every contact has its score row (a trigger makes it); skip one that has not.
            return {pk: score for pk, score in cursor.fetchall() if score is not None}
    return dict(
        Contact.objects.select_for_update(no_key=True, of=("self",))
        .filter(ids_q("pk", sorted(contact_ids)))
        .order_by("pk")
        .values_list("pk", "scorecard__score")
    )


@handler("queued")
def on_activities_recorded(event) -> None:
    """Score the batch set-based, then hand off contacts that crossed the threshold."""
    rules = engine.rules_enabled(kinds=[Rule.Kind.ENGAGEMENT, Rule.Kind.NEGATIVE])
    rules = [r for r in rules if r.kind == Rule.Kind.ENGAGEMENT or not engine.is_flag(r)]
    if not rules:
        return
    now = timezone.now()
    # Only contacts with an activity some rule counts can change: a batch of sends that no
    # rule reads costs no query beyond loading the rules.
    matches = engine.batch_matches(event.activities, rules, now)
    if not matches:
        return
    scores = _lock_scores({c for c, _ in matches})
    outcome = engine.batch_reconcile(
        matches=matches,
        rules=rules,
        now=now,
        scores=scores,
        batch=event.activities,
        unapplied=event.unapplied_ids,
    )
    handoff.mqls_hand_off(entries=outcome.entries, scores=outcome.scores)


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """A recycled contact's engagement points follow the recycle policy."""
    services.recycle_apply(transitions=event.transitions)


@handler("in_transaction")
def on_contacts_changed(event) -> None:
    """Re-evaluate fit rules (and unsubscribed / hard-bounce rules) for these contacts;
    hand off a merged contact whose combined score reaches the threshold (dated at the
    merge: the person qualifies when the two records become one, not earlier)."""
    now = event.at or timezone.now()
    entries = []
    if "merged" in event.fields:
        # What the merge added to the score, as one gain at the merge: the hand-off moves
        # a contact it takes to the threshold, as any gain would — and none it left as is.
        gains = ((c, _merge_gains.pop((c, event.at), 0)) for c in event.contact_ids)
        entries = [Entry(c, None, None, g, now, R.RESCORE) for c, g in gains if g > 0]
    rules = [r for r in engine.rules_enabled() if engine.is_flag(r)]
    if rules:
        ids = _lock(event.contact_ids)
        entries += engine.reconcile(contact_ids=ids, rules=rules, now=now, mode="fit").entries
    handoff.mqls_hand_off(entries=entries)


@handler("in_transaction")
def on_contacts_merging(event) -> None:
    """The duplicate's ledger moves to the kept contact, which is then reconciled against
    every rule over the merged activities, as a rescore would (dated at the merge): a
    once-ever rule both records earned is taken back once, the cached score becomes the
    merged ledger's sum. Activities still in the activity queue count from their own turn.
    The hand-off of a contact the merge takes over the threshold waits for the merge's
    ``contacts_changed`` (:func:`on_contacts_changed`): the merge re-points the other apps'
    rows (the moved history's report facts) after these handlers, before that event."""
    keep = event.keep_id
    before = _lock_scores([keep]).get(keep, 0)
    LedgerEntry.objects.filter(contact_id=event.duplicate_id).update(contact_id=keep)
    outcome = engine.reconcile(
        contact_ids=[keep],
        rules=engine.rules_enabled(),
        now=event.at,
        mode="rescore",
        all_rules=True,
        queued=queued_activity_ids(contact_range=(keep, keep + 1)),
    )
    gain = outcome.scores.get(keep, before) - before
    if gain > 0:
        _merge_gains[(keep, event.at)] = gain

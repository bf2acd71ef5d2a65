"""Scoring pages: rules (with back-test and history), settings, assignment, rescore, health."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from crm.roles import ADMIN_ONLY, ADMIN_READS_MARKETING, EVERYONE, allow, has_role

from . import backtest, engine, queries, services
from .forms import AssignmentRuleForm, BacktestDaysForm, RuleForm, SettingsForm
from .models import (
    AssignmentRule,
    AssignmentRuleChange,
    RescoreRun,
    Rule,
    ScoringSettings,
    SettingsVersion,
)
from .rules import rule_describe

# The latest changes shown under the settings and the assignment rules (the review
# register lists them all, period by period).
HISTORY_SHOWN = 20


@allow(ADMIN_READS_MARKETING)
def rule_list(request):
    rules = list(Rule.objects.select_related("updated_by").order_by("kind", "name", "id"))
    for r in rules:
        r.description = rule_describe(r)
    return render(
        request,
        "scoring/rule_list.html",
        {
            "rules": rules,
            "conf": ScoringSettings.load(),
            "run": RescoreRun.objects.first(),
            "can_edit": has_role(request.user, "admin"),
        },
    )


@allow(ADMIN_ONLY)
def rule_edit(request, pk=None):
    """Edit a rule; "Back-test" replays the draft without saving, "Save" saves and rescores."""
    rule = get_object_or_404(Rule, pk=pk) if pk else None
    form = RuleForm(request.POST or None, instance=rule or Rule())
    days_form = BacktestDaysForm(request.POST or None)
    result = None
    if request.method == "POST" and form.is_valid():
        if "backtest" in request.POST:
            days = days_form.cleaned_data["days"] if days_form.is_valid() else 90
            draft = form.draft()
            others = [r for r in engine.rules_enabled() if r.pk != (rule.pk if rule else None)]
            result = backtest.backtest_run(
                draft=[*others, *([draft] if draft.enabled else [])], days=days
            )
        else:
            data = {name: form.cleaned_data.get(name) for name in services.RULE_FIELDS}
            try:
                saved = services.rule_save(rule=rule, data=data, by=request.user)
            except ValidationError as exc:
                for field, errs in exc.message_dict.items():
                    for e in errs:
                        form.add_error(field if field in form.fields else None, e)
            else:
                run = services.rescore_start(by=request.user)
                messages.success(request, f"Saved “{saved.name}”; rescoring every contact.")
                return redirect("scoring:rescore-detail", pk=run.pk)
    return render(
        request,
        "scoring/rule_form.html",
        {"form": form, "rule": rule, "days_form": days_form, "result": result},
    )


@allow(ADMIN_ONLY)
@require_POST
def rule_toggle(request, pk):
    rule = get_object_or_404(Rule, pk=pk)
    services.rule_save(rule=rule, data={"enabled": not rule.enabled}, by=request.user)
    run = services.rescore_start(by=request.user)
    messages.success(request, f"“{rule.name}” is now {'on' if rule.enabled else 'off'}.")
    return redirect("scoring:rescore-detail", pk=run.pk)


@allow(ADMIN_READS_MARKETING)
def rule_history(request, pk):
    rule = get_object_or_404(Rule, pk=pk)
    versions = rule.versions.select_related("by")[:100]
    return render(request, "scoring/rule_history.html", {"rule": rule, "versions": versions})


@allow(ADMIN_ONLY)
def settings_edit(request):
    conf = ScoringSettings.load()
    form = SettingsForm(request.POST or None, instance=conf)
    if request.method == "POST" and form.is_valid():
        services.settings_update(data=form.cleaned_data, by=request.user)
        messages.success(request, "Scoring settings saved.")
        return redirect("scoring:settings")
    history = SettingsVersion.objects.select_related("by")[:HISTORY_SHOWN]
    return render(request, "scoring/settings.html", {"form": form, "history": history})


@allow(ADMIN_ONLY)
def assignment(request):
    form = AssignmentRuleForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.assignment_rule_save(data=form.cleaned_data, by=request.user)
        messages.success(request, "Assignment rule added.")
        return redirect("scoring:assignment")
    rules = AssignmentRule.objects.select_related("user")
    history = AssignmentRuleChange.objects.select_related("by")[:HISTORY_SHOWN]
    return render(
        request, "scoring/assignment.html", {"form": form, "rules": rules, "history": history}
    )


@allow(ADMIN_ONLY)
@require_POST
def assignment_delete(request, pk):
    services.assignment_rule_delete(rule=get_object_or_404(AssignmentRule, pk=pk), by=request.user)
    messages.success(request, "Assignment rule removed.")
    return redirect("scoring:assignment")


@allow(ADMIN_ONLY)
@require_POST
def rescore_start(request):
    run = services.rescore_start(by=request.user)
    return redirect("scoring:rescore-detail", pk=run.pk)


@allow(ADMIN_READS_MARKETING)
def rescore_detail(request, pk):
    """The progress of a rescore; htmx polls the partial until the run is finished."""
    run = get_object_or_404(RescoreRun, pk=pk)
    template = "scoring/_rescore.html" if request.htmx else "scoring/rescore.html"
    return render(request, template, {"run": run})


@allow(EVERYONE)
def health(request):
    now = timezone.now()
    this_month, previous = queries.month_start(now), queries.month_start(now, back=1)
    return render(
        request,
        "scoring/health.html",
        {
            "alert": queries.review_alert(now=now),
            "months": queries.acceptance_by_month(now=now),
            "per_rule": queries.points_per_rule(now=now),
            "profiles": [
                (previous, queries.new_lead_scores(start=previous, end=this_month)),
                (this_month, queries.new_lead_scores(start=this_month, end=now)),
            ],
        },
    )

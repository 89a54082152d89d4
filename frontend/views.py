"""Page views: each renders a template with the little data the page needs at first paint;
everything else the page's JavaScript fetches from the JSON API, like any other client."""

from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render

from annotate.models import Demonstration, Lease, Project
from annotate.roles import is_admin
from annotate.selectors.projects import project_counts, project_list
from annotate.selectors.writing import prompt_to_write
from annotate.services.demonstrations import prompt_offer_make
from config.converters import MAX_ID
from config.security import allow_remote_images
from config.throttle import Throttled, password_attempt_check, password_failure_record


def _render(request, template: str, **context):
    context.setdefault("is_admin", is_admin(request.user))
    return render(request, f"frontend/{template}", context)


def admin_required(view):
    """Admin pages: anonymous users go to the login page, annotators get a 403."""

    @wraps(view)
    @login_required
    def wrapped(request, *args, **kwargs):
        if not is_admin(request.user):
            raise PermissionDenied("Only admins may open this page.")
        return view(request, *args, **kwargs)

    return wrapped


class LoginView(auth_views.LoginView):
    """The login form, throttled like POST /api/auth/token: by username and by address, checked
    before the password is hashed."""

    template_name = "frontend/login.html"
    redirect_authenticated_user = True
    next_page = "/"  # LOGIN_REDIRECT_URL is Django's /accounts/profile/ default, which we do not serve

    def post(self, request, *args, **kwargs):
        try:
            password_attempt_check(request, username=request.POST.get("username", ""))
        except Throttled as exc:
            response = self.render_to_response(self.get_context_data(form=self.get_form(), throttled=exc.message),
                                               status=429)
            response["Retry-After"] = str(exc.retry_after)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        password_failure_record(self.request, username=self.request.POST.get("username", ""))
        return super().form_invalid(form)


class LogoutView(auth_views.LogoutView):
    next_page = "/login"


def _project_page_data(project) -> dict:
    return {"id": project.pk, "name": project.name, "guidelines": project.guidelines,
            "allow_ties": project.allow_ties, "responses_per_task": project.responses_per_task,
            "allow_remote_images": project.allow_remote_images,
            "lease_seconds": settings.RLHF_LEASE_SECONDS}


@login_required
def home(request):
    """Each project with the annotator's own progress beside the project's."""
    mine = {}
    for project_id, status in (Lease.objects.filter(annotator=request.user)
                               .exclude(status=Lease.Status.ACTIVE).values_list("project_id", "status")):
        mine.setdefault(project_id, {"submitted": 0, "skipped": 0, "expired": 0})[status] += 1
    written = {}
    for project_id in Demonstration.objects.filter(annotator=request.user).values_list("project_id", flat=True):
        written[project_id] = written.get(project_id, 0) + 1
    rows = []
    for project in project_list():
        counts = project_counts(project=project)
        me = mine.get(project.pk, {})
        rows.append({"project": project, "counts": counts, "ranked": me.get("submitted", 0),
                     "skipped": me.get("skipped", 0), "written": written.get(project.pk, 0),
                     "done_pct": round(100 * counts["tasks_complete"] / counts["tasks"]) if counts["tasks"] else 0})
    return _render(request, "home.html", rows=rows)


@login_required
def rank(request, project_id: int):
    project = get_object_or_404(Project, pk=project_id)
    return _with_image_policy(project, _render(request, "rank.html", project=project,
                                               page_data=_project_page_data(project)))


def _with_image_policy(project, response):
    """Pages showing a project's model output load remote images only if the project allows them."""
    if project.allow_remote_images:
        allow_remote_images(response)
    return response


@login_required
def write(request, project_id: int):
    """Writing mode: the prompt to answer is chosen here (a prompt of the project that this
    annotator has not written for yet), or given as ?prompt=ID; the page carries the signed offer
    the demonstration must come back with."""
    project = get_object_or_404(Project, pk=project_id)

    def number(name: str) -> int | None:
        raw = request.GET.get(name, "")
        return int(raw) if raw.isdigit() and 0 < int(raw) <= MAX_ID else None

    prompt = prompt_to_write(project=project, annotator=request.user, wanted=number("prompt"), after=number("after"))
    data = _project_page_data(project)
    if prompt is not None:
        data["prompt"] = {"id": prompt.pk, "messages": prompt.as_messages(),
                          "offer": prompt_offer_make(prompt=prompt, annotator=request.user)}
    return _with_image_policy(project, _render(request, "write.html", project=project, prompt=prompt, page_data=data))


@admin_required
def manage_projects(request):
    rows = [{"project": p, "counts": project_counts(project=p)} for p in project_list()]
    return _render(request, "manage/projects.html", rows=rows)


@admin_required
def manage_project(request, project_id: int):
    project = get_object_or_404(Project, pk=project_id)
    return _render(request, "manage/project.html", project=project, counts=project_counts(project=project),
                   page_data=_project_page_data(project))


@admin_required
def manage_annotators(request):
    return _render(request, "manage/annotators.html",
                   projects=[{"id": p.pk, "name": p.name} for p in project_list()],
                   selected=request.GET.get("project", ""))


@admin_required
def manage_jobs(request):
    return _render(request, "manage/jobs.html",
                   projects=[{"id": p.pk, "name": p.name} for p in project_list()],
                   selected=request.GET.get("project", ""))


@admin_required
def manage_job(request, job_id: int):
    return _render(request, "manage/job.html", job_id=job_id)


@admin_required
def manage_models(request):
    return _render(request, "manage/models.html")


@admin_required
def manage_keys(request):
    return _render(request, "manage/keys.html")


@login_required
def tokens(request):
    return _render(request, "tokens.html", max_age_days=settings.RLHF_TOKEN_MAX_AGE_DAYS)


@admin_required
def playground(request):
    return _render(request, "playground.html")

"""URLs of annotate, mounted under /api/ by config/urls.py."""

from django.urls import path

from config import converters  # noqa: F401  (registers <id:…>)

from .api import auth, projects, tasks

urlpatterns = [
    path("auth/token", auth.TokenView.as_view(), name="auth-token"),
    path("auth/tokens", auth.TokensView.as_view(), name="auth-tokens"),
    path("auth/tokens/<id:token_id>", auth.TokenDetailView.as_view(), name="auth-token-detail"),
    path("users", auth.UsersView.as_view(), name="users"),
    path("users/<id:user_id>", auth.UserDetailView.as_view(), name="user-detail"),
    path("me", auth.MeView.as_view(), name="me"),
    path("me/password", auth.PasswordView.as_view(), name="me-password"),
    path("projects", projects.ProjectsView.as_view(), name="projects"),
    path("projects/<id:project_id>", projects.ProjectDetailView.as_view(), name="project-detail"),
    path("projects/<id:project_id>/import", projects.ProjectImportView.as_view(), name="project-import"),
    path("projects/<id:project_id>/export", projects.ProjectExportView.as_view(), name="project-export"),
    path("projects/<id:project_id>/stats", projects.ProjectStatsView.as_view(), name="project-stats"),
    path("projects/<id:project_id>/prompts", projects.ProjectPromptsView.as_view(), name="project-prompts"),
    path("projects/<id:project_id>/tasks/next", tasks.NextTaskView.as_view(), name="task-next"),
    path("projects/<id:project_id>/writing/next", tasks.WritingNextView.as_view(), name="writing-next"),
    path("leases/<id:lease_id>/heartbeat", tasks.HeartbeatView.as_view(), name="lease-heartbeat"),
    path("projects/<id:project_id>/tasks/remaining", tasks.RemainingView.as_view(), name="tasks-remaining"),
    path("projects/<id:project_id>/rankings/last", tasks.LastRankingView.as_view(), name="ranking-last"),
    path("tasks/<id:task_id>/rankings", tasks.RankingCreateView.as_view(), name="task-rankings"),
    path("rankings/<id:ranking_id>/revise", tasks.RankingReviseView.as_view(), name="ranking-revise"),
    path("tasks/<id:task_id>/skip", tasks.SkipView.as_view(), name="task-skip"),
    path("tasks/<id:task_id>/gold", tasks.GoldView.as_view(), name="task-gold"),
    path("prompts/<id:prompt_id>/demonstrations", tasks.DemonstrationCreateView.as_view(),
         name="prompt-demonstrations"),
]

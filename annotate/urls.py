"""URLs of annotate, mounted under /api/ by config/urls.py."""

from django.urls import path

from .api import auth, projects, tasks

urlpatterns = [
    path("auth/token", auth.TokenView.as_view(), name="auth-token"),
    path("users", auth.UsersView.as_view(), name="users"),
    path("me", auth.MeView.as_view(), name="me"),
    path("projects", projects.ProjectsView.as_view(), name="projects"),
    path("projects/<int:project_id>", projects.ProjectDetailView.as_view(), name="project-detail"),
    path("projects/<int:project_id>/import", projects.ProjectImportView.as_view(), name="project-import"),
    path("projects/<int:project_id>/export", projects.ProjectExportView.as_view(), name="project-export"),
    path("projects/<int:project_id>/stats", projects.ProjectStatsView.as_view(), name="project-stats"),
    path("projects/<int:project_id>/prompts", projects.ProjectPromptsView.as_view(), name="project-prompts"),
    path("projects/<int:project_id>/tasks/next", tasks.NextTaskView.as_view(), name="task-next"),
    path("leases/<int:lease_id>/heartbeat", tasks.HeartbeatView.as_view(), name="lease-heartbeat"),
    path("projects/<int:project_id>/tasks/remaining", tasks.RemainingView.as_view(), name="tasks-remaining"),
    path("tasks/<int:task_id>/rankings", tasks.RankingCreateView.as_view(), name="task-rankings"),
    path("rankings/<int:ranking_id>/revise", tasks.RankingReviseView.as_view(), name="ranking-revise"),
    path("tasks/<int:task_id>/skip", tasks.SkipView.as_view(), name="task-skip"),
    path("tasks/<int:task_id>/gold", tasks.GoldView.as_view(), name="task-gold"),
    path("prompts/<int:prompt_id>/demonstrations", tasks.DemonstrationCreateView.as_view(),
         name="prompt-demonstrations"),
]

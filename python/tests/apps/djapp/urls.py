from django.urls import path

import sessionlog_store.django

from . import views

urlpatterns = [
    path("login/", views.login),
    path("count/", views.count),
    path("whoami/", views.whoami),
    path("logout/", views.logout),
    path("delete-then-touch/", views.delete_then_touch),
    path("merge-count/", views.merge_count),
    path("auth-login/", views.auth_login),
    path("logout-others/", views.logout_others),
    # What the session store counted, for a Prometheus scrape.
    path("metrics", sessionlog_store.django.metrics_view),
]

from django.urls import path

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
]

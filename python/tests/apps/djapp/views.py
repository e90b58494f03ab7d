"""Views: login (a new session key, as django.contrib.auth does), a counter
in the session, whoami, logout (flush)."""

import json
import os

from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt


def _reply(request, **extra):
    body = {"pid": os.getpid(), "user": request.session.get("user"), "count": request.session.get("count", 0)}
    body.update(extra)
    return JsonResponse(body)


@csrf_exempt
def login(request):
    user = request.GET.get("user") or request.POST.get("user") or "alice"
    request.session.cycle_key()  # against session fixation
    request.session["user"] = user
    return _reply(request)


def count(request):
    request.session["count"] = request.session.get("count", 0) + 1
    return _reply(request)


def whoami(request):
    return _reply(request)


def logout(request):
    request.session.flush()
    return _reply(request)


def delete_then_touch(request):
    """Deletes this session through another SessionStore (a logout in a
    concurrent request), then changes it: the save must not resurrect it."""
    from importlib import import_module

    from django.conf import settings

    engine = import_module(settings.SESSION_ENGINE)
    request.session.get("user")  # load it first, as a view would
    engine.SessionStore().delete(request.session.session_key)
    request.session["count"] = request.session.get("count", 0) + 1
    return HttpResponse(json.dumps({"pid": os.getpid()}), content_type="application/json")


def merge_count(request):
    """Increments the counter with sessionlog_store.django.update_session. With
    ``?race=N`` another request's save (count + N) lands while the first
    attempt runs: the helper must re-run the change on it, so both count."""
    from sessionlog_store.django import SessionStore, update_session

    race = int(request.GET.get("race", "0"))
    calls = []

    def change(data):
        calls.append(1)
        if race and len(calls) == 1:
            other = SessionStore(request.session.session_key)
            other["count"] = other.get("count", 0) + race
            other.save()
        data["count"] = data.get("count", 0) + 1
        return data["count"]

    n = update_session(request, change)
    return JsonResponse({"count": n, "attempts": len(calls)})
@csrf_exempt
def auth_login(request):
    """What django.contrib.auth.login leaves in the session (the user's
    primary key under _auth_user_id), without needing a user table."""
    user = request.GET.get("user") or "42"
    request.session.cycle_key()
    request.session["_auth_user_id"] = user
    request.session["user"] = user
    return _reply(request)


def logout_others(request):
    """"Log out my other devices": every other session of this user."""
    from sessionlog_store.django import delete_sessions_of

    user = request.session.get("_auth_user_id")
    deleted = delete_sessions_of(user, keep=request.session.session_key) if user else 0
    return _reply(request, deleted=deleted)

"""A small Flask app (login, counter, logout) on sessionlog sessions, for
the tests. The store path comes from FLASKAPP_SESSIONLOG_PATH."""

import os
import tempfile

from flask import Flask, jsonify, request, session

import sessionlog_store.flask


def create_app(path=None, conditional=None):
    app = Flask(__name__)
    app.secret_key = os.environ.get("FLASKAPP_SECRET_KEY", "flaskapp-test-secret-key-0123456789")
    # A private directory by default: a store refuses one that other users
    # can write, such as /tmp itself.
    app.config["SESSIONLOG_PATH"] = path or os.environ.get(
        "FLASKAPP_SESSIONLOG_PATH",
        os.path.join(tempfile.mkdtemp(prefix="flaskapp-"), "sessions.db"),
    )
    if conditional is None:
        conditional = os.environ.get("FLASKAPP_CONDITIONAL", "") == "1"
    app.config["SESSIONLOG_CONDITIONAL"] = conditional
    if os.environ.get("FLASKAPP_MAX_SESSIONS_PER_USER"):
        # The login below keeps the user under "user" (no Flask-Login).
        app.config["SESSIONLOG_OWNER_KEY"] = "user"
        app.config["SESSIONLOG_MAX_SESSIONS_PER_USER"] = int(os.environ["FLASKAPP_MAX_SESSIONS_PER_USER"])
    sessionlog_store.flask.init_app(app)

    def reply(**extra):
        body = {"pid": os.getpid(), "user": session.get("user"), "count": session.get("count", 0)}
        body.update(extra)
        return jsonify(body)

    @app.route("/login/")
    def login():
        session.regenerate()  # against session fixation
        session["user"] = request.args.get("user", "alice")
        session.permanent = request.args.get("permanent") == "1"
        return reply()

    @app.route("/count/")
    def count():
        session["count"] = session.get("count", 0) + 1
        return reply()

    @app.route("/whoami/")
    def whoami():
        return reply()

    @app.route("/logout/")
    def logout():
        session.clear()
        return reply()

    # What the session store counted, for a Prometheus scrape.
    app.add_url_rule("/metrics", view_func=sessionlog_store.flask.metrics_response)

    return app


app = create_app()

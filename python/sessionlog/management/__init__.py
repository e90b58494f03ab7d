"""Django management commands of sessionlog (add ``"sessionlog"`` to
``INSTALLED_APPS`` to have them)."""

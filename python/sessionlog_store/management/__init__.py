"""Django management commands of sessionlog (add ``"sessionlog_store"`` to
``INSTALLED_APPS`` to have them)."""

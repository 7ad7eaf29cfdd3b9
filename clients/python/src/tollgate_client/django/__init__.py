"""Django REST framework on tollgate: add `"tollgate_client.django"` to
INSTALLED_APPS (settings are checked in `AppConfig.ready()`), set
`TOLLGATE = {"URL": ...}` and name the throttles of `throttling.py` in
`DEFAULT_THROTTLE_CLASSES`. Settings are read in `settings.py`."""

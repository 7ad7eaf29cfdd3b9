"""A DRF project throttled by tollgate; TG_TEST_BAD breaks one setting on purpose."""

import os

SECRET_KEY = "tollgate-client-test"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "testserver"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "rest_framework",
                  "tollgate_client.django"]
ROOT_URLCONF = "djangoapp.urls"
DATABASES: dict = {}
USE_TZ = True
# DRF's own throttle counts here: one LocMemCache per process.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

TOLLGATE = {
    "URL": os.environ.get("TOLLGATE_URL"),
    "ADMIN_URL": os.environ.get("TOLLGATE_ADMIN_URL"),
    # Generous: 64 concurrent requests on a busy 2-core machine must not time out.
    "TIMEOUT": 5,
}
# "burst" is per day: sliding_window windows are aligned (floor(now/period)),
# and a burst must not straddle a boundary, where a weighted count may differ.
REST_FRAMEWORK = {
    "DEFAULT_THROTTLE_CLASSES": ["tollgate_client.django.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": "1000/day", "user": "1/m", "burst": "10/day", "burst_drf": "10/day",
                               "wait": "2/m", "inproc": "2/minute", "proxied": "1/m"},
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

bad = os.environ.get("TG_TEST_BAD")
if bad == "rate":
    REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["burst"] = "3/fortnight"
elif bad == "url":
    del TOLLGATE["URL"]

import os

from django.urls import path
from rest_framework import throttling as drf
from rest_framework.response import Response
from rest_framework.views import APIView

from tollgate_client.django import throttling as tg
from tollgate_client.django.settings import client


class Limited(APIView):
    """Counted by tollgate: one limit across every worker."""
    throttle_classes = [tg.ScopedRateThrottle]
    throttle_scope = "burst"

    def get(self, request):
        return Response({"pid": os.getpid()})


class CountedByCache(Limited):
    """DRF's own throttle, counting in this process's cache: the contrast."""
    throttle_classes = [drf.ScopedRateThrottle]
    throttle_scope = "burst_drf"


class Wait(Limited):
    throttle_scope = "wait"


class Ready(APIView):
    throttle_classes: list = []

    def get(self, request):
        return Response({"ready": True})


class Heartbeat(APIView):
    throttle_classes: list = []

    def post(self, request, who):
        return Response({"recorded": client().heartbeat(who)})


urlpatterns = [
    path("ready", Ready.as_view()),
    path("limited", Limited.as_view()),
    path("drf", CountedByCache.as_view()),
    path("wait", Wait.as_view()),
    path("hb/<str:who>", Heartbeat.as_view()),
]

from django.apps import AppConfig


class TollgateConfig(AppConfig):
    name = "tollgate_client.django"
    label = "tollgate_client"
    verbose_name = "tollgate"

    def ready(self) -> None:
        # Bad settings stop the process here, at django.setup(), not on the
        # first throttled request.
        from .settings import client

        client()

"""Servers under test: the launch profiles of the backends (``infermeter.backends``: vLLM,
TGI, SGLang, llama.cpp, ``transformers serve``), run as local processes (``LocalServer``),
rendered as ``docker run`` lines and dstack task/service files, checked (``lint``), and
recorded (``provenance``).  See docs/servers.md and docs/backends.md.
"""

from infermeter.backends import Profile, get_profile, profiles
from infermeter.backends.launch import LaunchCommand
from infermeter.backends.settings import ServerSettings, Vendor

__all__ = ["PROFILES", "LaunchCommand", "LocalServer", "Profile", "ServerSettings", "Vendor", "get_profile",
           "provenance"]


def __getattr__(name: str):  # the process and provenance parts load on first use
    if name == "PROFILES":
        return profiles()
    if name == "LocalServer":
        from infermeter.servers.local import LocalServer

        return LocalServer
    if name == "provenance":
        from infermeter.servers.provenance import provenance

        return provenance
    raise AttributeError(name)

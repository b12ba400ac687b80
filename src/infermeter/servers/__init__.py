"""Servers under test: launch profiles for vLLM, TGI, SGLang, llama.cpp and
``transformers serve``, run as local processes (``LocalServer``), rendered as
``docker run`` lines and dstack task/service files, checked (``lint``), and recorded
(``provenance``).  See docs/servers.md.
"""

from infermeter.servers.profiles import PROFILES, LaunchCommand, Profile, get_profile
from infermeter.servers.settings import ServerSettings, Vendor

__all__ = ["PROFILES", "LaunchCommand", "LocalServer", "Profile", "ServerSettings", "Vendor", "get_profile",
           "provenance"]


def __getattr__(name: str):  # the process and provenance parts load on first use
    if name == "LocalServer":
        from infermeter.servers.local import LocalServer

        return LocalServer
    if name == "provenance":
        from infermeter.servers.provenance import provenance

        return provenance
    raise AttributeError(name)

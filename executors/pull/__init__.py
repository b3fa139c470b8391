"""Pull sites: a site that accepts no connection takes part by dialling out to a relay.

The orchestrator reaches such a site with :class:`PullSiteTransport` (profile entry
``transport: pull``); the relay (:mod:`executors.pull.relay`) queues its calls; the site's
:class:`SiteAgent` fetches them and answers with the site service's own handling.
"""

from executors.pull.agent import ROUTES, SiteAgent
from executors.pull.config import RelayConfig
from executors.pull.mailbox import Mailbox
from executors.pull.messages import Call, Reply
from executors.pull.relay import RelayServer, create_relay_app, serve
from executors.pull.transport import PullSiteTransport, RelayChannel

__all__ = [
    "ROUTES",
    "Call",
    "Mailbox",
    "PullSiteTransport",
    "RelayChannel",
    "RelayConfig",
    "RelayServer",
    "Reply",
    "SiteAgent",
    "create_relay_app",
    "serve",
]

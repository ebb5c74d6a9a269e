"""An S3-compatible server for the tests: moto's server mode on a loopback port, in a thread of the test process.

Moto accepts any keys; the tests still pass explicit ones, so botocore never looks for credentials elsewhere
(an instance-metadata lookup would leave the machine).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

ACCESS_KEY_ID = "zapgate-test"
SECRET_ACCESS_KEY = "zapgate-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class S3Server:
    """Where the test S3 server listens, and the keys it is reached with."""

    endpoint_url: str
    region: str = REGION
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY

    def client_options(self) -> dict[str, Any]:
        """The arguments of aiobotocore's `create_client("s3", ...)` for this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """An aiobotocore S3 client of this server (to look behind a store's back)."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(s3={"addressing_style": "path"})
        async with get_session().create_client("s3", config=config, **self.client_options()) as s3:
            yield s3

    async def new_bucket(self) -> str:
        """Create an empty bucket of a name of its own; return the name."""
        name = f"zapgate-test-{uuid.uuid4().hex[:16]}"
        async with self.client() as s3:
            await s3.create_bucket(Bucket=name)
        return name


@contextlib.contextmanager
def moto_server() -> Iterator[S3Server]:
    """Run moto's S3 server on 127.0.0.1 (a free port) until the block ends."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()

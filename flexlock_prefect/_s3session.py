"""The HTTP session of every S3 client that `storage` builds: aiobotocore's, minus one unbounded wait.

A module of its own so that the class is importable by name: fsspec pickles a filesystem as the
arguments it was made with, and those name this class.
"""

from __future__ import annotations

from typing import Any

from aiobotocore.httpsession import AIOHTTPSession


class NoContinueSession(AIOHTTPSession):
    """aiobotocore's aiohttp session, minus the `Expect: 100-continue` header on uploads.

    botocore asks for `100 Continue` before every body it sends (PutObject, UploadPart). aiohttp
    then sends the headers and waits for that interim answer before it writes the body, and it
    arms the read timeout only after the body: an endpoint that took the headers and never
    answered (a connection cut in a way the client did not see, a stalled proxy) held a
    `storage.write_atomic` for ever (`benchmarks/faults.py`, S3 scenario, trial 86 of seed 1).
    Without the header the body goes out at once and `read_timeout` bounds the wait for the
    response. The header is not signed (botocore leaves `expect` out of SigV4), so dropping it
    after signing is safe; S3 only loses the chance to refuse a body before it is sent.
    """

    async def send(self, request: Any) -> Any:
        if "Expect" in request.headers:
            del request.headers["Expect"]
        return await super().send(request)

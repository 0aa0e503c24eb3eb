"""Uploads a file to a tus server with tuspy (the protocol's Python client), as a user of
mp3converter would, and prints the upload's URL once every byte is in.

    python3 tus_upload.py ENDPOINT TOKEN FILE CHUNK_BYTES [KEY=VALUE ...]

The KEY=VALUE pairs become the upload's metadata. Each chunk is sent with an Upload-Checksum
(SHA-1), which the client computes itself.
"""

import sys

from tusclient import client


def main() -> None:
    endpoint, token, path, chunk_size, *pairs = sys.argv[1:]
    metadata = dict(pair.split("=", 1) for pair in pairs)
    tus = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
    uploader = tus.uploader(
        path,
        chunk_size=int(chunk_size),
        metadata=metadata,
        upload_checksum=True,
        retries=3,
        retry_delay=1,
    )
    uploader.upload()
    print(uploader.url, flush=True)


if __name__ == "__main__":
    main()

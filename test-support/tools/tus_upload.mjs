// Uploads a file to a tus server with tus-js-client (the protocol's JavaScript client, the one
// behind Uppy), under Node, as a user of mp3converter would, and prints the upload's URL once
// every byte is in.
//
//     node tus_upload.mjs ENDPOINT TOKEN FILE CHUNK_BYTES [KEY=VALUE ...]
//
// The KEY=VALUE pairs become the upload's metadata. The client retries through network errors
// (resuming from the server's offset) as it does in a browser.

import { readFileSync } from 'node:fs';
import tus from 'tus-js-client';

const [endpoint, token, path, chunkSize, ...pairs] = process.argv.slice(2);
const metadata = Object.fromEntries(pairs.map((pair) => {
  const at = pair.indexOf('=');
  return [pair.slice(0, at), pair.slice(at + 1)];
}));

const upload = new tus.Upload(readFileSync(path), {
  endpoint,
  headers: { Authorization: `Bearer ${token}` },
  chunkSize: Number(chunkSize),
  metadata,
  retryDelays: [0, 500, 1000, 2000],
  onError(error) {
    console.error(`upload failed: ${error}`);
    process.exit(1);
  },
  onSuccess() {
    console.log(upload.url);
  },
});
upload.start();

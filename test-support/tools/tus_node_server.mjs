// The tus reference server for Node (@tus/server with @tus/file-store, from npm), for the
// upload benchmark to compare the gateway with: it serves /files/ on PORT and keeps uploads in
// DIRECTORY, as its documentation sets it up.
//
//     node tus_node_server.mjs PORT DIRECTORY

import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) });
http.createServer((request, response) => tus.handle(request, response)).listen(Number(port), '127.0.0.1', () => {
  console.log(`listening on ${port}`);
});

// A socket.io-client peer driven by the acceptance tests (tests/acceptance/test_socketio.py).
//
//   node sio_peer.mjs '{"url": "http://127.0.0.1:8000", "apiKey": "zg_...", "transports": ["websocket"]}'
//
// It connects as the seed shows, io(url + '/whatsapp', {auth: {apiKey}}), then reads commands as JSON lines
// on stdin and writes everything that happens as JSON lines on stdout:
//   in:  {"op": "emit", "id": 1, "event": "join-session", "args": [{"sessionId": "user123"}]}  (with an ack)
//        {"op": "emit", "id": 2, "event": "get-sessions", "args": [], "ack": false}             (no ack)
//        {"op": "disconnect"}
//   out: {"kind": "connect", "id": "...", "transport": "websocket"}
//        {"kind": "connect_error", "message": "...", "data": {...}}
//        {"kind": "ack", "id": 1, "args": [...]} or {"kind": "ack_timeout", "id": 1}
//        {"kind": "event", "event": "qr-code", "args": [{...}]}
//        {"kind": "disconnect", "reason": "..."}
// Optional config: "headers" (extraHeaders), "namespace" (default "/whatsapp"), "ackTimeout" (ms).
import readline from "node:readline";
import { io } from "socket.io-client";

const config = JSON.parse(process.argv[2]);
const out = (message) => process.stdout.write(JSON.stringify(message) + "\n");

const options = {
  transports: config.transports ?? ["websocket"],
  reconnection: false, // a dropped connection must show, not be papered over
  forceNew: true,
  timeout: 30000,
};
if (config.apiKey !== undefined && config.apiKey !== null) options.auth = { apiKey: config.apiKey };
if (config.headers) options.extraHeaders = config.headers;

const socket = io(config.url + (config.namespace ?? "/whatsapp"), options);

socket.on("connect", () => out({ kind: "connect", id: socket.id, transport: socket.io.engine.transport.name }));
socket.on("connect_error", (err) => out({ kind: "connect_error", message: err.message, data: err.data ?? null }));
socket.on("disconnect", (reason) => out({ kind: "disconnect", reason }));
socket.onAny((event, ...args) => out({ kind: "event", event, args }));

const quit = () => {
  socket.disconnect();
  setTimeout(() => process.exit(0), 200); // let the disconnect packet go out
};

const commands = readline.createInterface({ input: process.stdin });
commands.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  switch (command.op) {
    case "emit":
      if (command.ack === false) {
        socket.emit(command.event, ...command.args);
      } else {
        socket.timeout(config.ackTimeout ?? 30000).emit(command.event, ...command.args, (err, ...args) => {
          out(err ? { kind: "ack_timeout", id: command.id } : { kind: "ack", id: command.id, args });
        });
      }
      break;
    case "disconnect":
      socket.disconnect();
      break;
    default:
      out({ kind: "peer_error", message: `unknown op ${command.op}` });
  }
});
commands.on("close", quit);

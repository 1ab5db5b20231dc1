// A real JupyterLab client (@jupyterlab/services) against nb2svc kernel mode.
// Usage: node client.js BASE_URL TOKEN  -> prints one JSON line with what it saw.
'use strict';

const { ServerConnection, KernelManager, KernelSpecAPI } = require('@jupyterlab/services');
const WebSocket = require('ws');

async function main() {
  const [baseUrl, token] = process.argv.slice(2);
  const serverSettings = ServerConnection.makeSettings({ baseUrl, token, WebSocket });
  const specs = await KernelSpecAPI.getSpecs(serverSettings);
  const manager = new KernelManager({ serverSettings });
  await manager.ready;
  const kernel = await manager.startNew({ name: specs.default });
  let stdout = '';
  const future = kernel.requestExecute({ code: 'print(1+1)' });
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') {
      stdout += msg.content.text;
    }
  };
  const reply = await future.done;
  const info = await kernel.info;
  const result = {
    defaultSpec: specs.default,
    status: reply.content.status,
    stdout,
    connectionStatus: kernel.connectionStatus,
    subprotocol: kernel._ws ? kernel._ws.protocol : null,
    language: info.language_info.name,
    kernelId: kernel.id
  };
  await kernel.shutdown();
  manager.dispose();
  console.log(JSON.stringify(result));
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  }
);

// A browser page on another origin using @jupyterlab/services (bundled by esbuild for
// tests/test_kg_browser.py): start a kernel with a token, run print(6*7), show the output.
// The server's address and the token come from the page's query string.
import { KernelManager, ServerConnection } from '@jupyterlab/services';

async function main() {
  const params = new URLSearchParams(window.location.search);
  const serverSettings = ServerConnection.makeSettings({
    baseUrl: params.get('server'),
    wsUrl: params.get('server').replace(/^http/, 'ws'),
    token: params.get('token'),
    appendToken: true,
  });
  const status = await ServerConnection.makeRequest(serverSettings.baseUrl + 'api/status', {}, serverSettings);
  if (!status.ok) {
    throw new Error('GET /api/status answered ' + status.status);
  }
  const manager = new KernelManager({ serverSettings });
  await manager.ready;
  const kernel = await manager.startNew({ name: 'python3' });
  let stdout = '';
  const future = kernel.requestExecute({ code: 'print(6*7)' });
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') {
      stdout += msg.content.text;
    }
  };
  await future.done;
  await kernel.shutdown();
  return stdout.trim();
}

main().then(
  (out) => { document.getElementById('out').textContent = out; },
  (err) => { document.getElementById('error').textContent = String(err && err.stack || err); },
);

// A Jupyter kernel in a web page, with nothing but the browser: what any Jupyter client does.
//
// 1. REST: POST /api/kernels starts a kernel (the token in an Authorization header);
//    DELETE /api/kernels/{id} stops it when the page goes away.
// 2. The channels websocket /api/kernels/{id}/channels carries the kernel's messages; a
//    browser cannot set headers on a websocket, so the token goes as ?token= (as Jupyter's
//    clients send it).
// 3. The Jupyter message protocol (5.3) as JSON text frames: this page sends
//    execute_request on the shell channel and shows what comes back on iopub (stream,
//    execute_result, display_data, error, status) and shell (execute_reply).
//
// Output is shown as text (textContent) and PNG images, never as HTML: kernel output is
// data, and putting it into the page as markup would let a cell script the page.

const page = {
  kernel: document.getElementById('kernel'),
  status: document.getElementById('status'),
  cells: document.getElementById('cells'),
  form: document.getElementById('run'),
  code: document.getElementById('code'),
  button: document.getElementById('run-button'),
};

const settings = readSettings();
const session = newId();
const cells = new Map(); // execute_request msg_id -> its cell on the page
let kernel = null; // the kernel model from POST /api/kernels
let socket = null;

/** The token and server from the page's URL: #token=T (or Jupyter's ?token=T), and
 *  server=URL when the page is not served by nb2svc itself (--allow-origin). */
function readSettings() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const pick = (name) => fragment.get(name) ?? query.get(name);
  // served at BASE/public/index.html, so the API is at BASE/api/...
  const server = new URL(pick('server') ?? '..', location.href);
  if (!server.pathname.endsWith('/')) server.pathname += '/';
  return { server, token: pick('token') ?? '', kernelName: pick('kernel') };
}

/** A random hex id; crypto.randomUUID() exists only on https and localhost pages. */
function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function authHeaders() {
  return settings.token ? { Authorization: `token ${settings.token}` } : {};
}

/** One REST call; a non-2xx answer throws with nb2svc's JSON error message. */
async function api(method, path, body) {
  const headers = authHeaders();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(new URL(path, settings.server), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    throw new Error(`${method} ${path}: ${response.status} ${answer.message ?? response.statusText}`);
  }
  return response.status === 204 ? null : response.json();
}

function showStatus(text, failed = false) {
  page.status.textContent = text;
  page.status.classList.toggle('error', failed);
  page.button.disabled = failed || socket?.readyState !== WebSocket.OPEN;
}

async function start() {
  try {
    kernel = await api('POST', 'api/kernels', settings.kernelName ? { name: settings.kernelName } : {});
  } catch (error) {
    showStatus(`error: ${error.message}`, true);
    return;
  }
  page.kernel.textContent = kernel.id;
  const url = new URL(`api/kernels/${kernel.id}/channels`, settings.server);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('session_id', session);
  if (settings.token) url.searchParams.set('token', settings.token);
  socket = new WebSocket(url);
  socket.addEventListener('open', () => {
    showStatus(kernel.execution_state ?? 'idle');
    socket.send(JSON.stringify(message('kernel_info_request', {}))); // its busy/idle say the state
  });
  socket.addEventListener('message', (event) => {
    if (typeof event.data === 'string') receive(JSON.parse(event.data)); // binary frames: buffers (widgets)
  });
  socket.addEventListener('close', () => showStatus('disconnected', true));
}

function message(msgType, content) {
  return {
    header: {
      msg_id: newId(),
      msg_type: msgType,
      session,
      username: 'kernel-page',
      date: new Date().toISOString(),
      version: '5.3',
    },
    parent_header: {},
    metadata: {},
    content,
    buffers: [],
    channel: 'shell',
  };
}

function run(code) {
  const request = message('execute_request', {
    code,
    silent: false,
    store_history: true,
    user_expressions: {},
    allow_stdin: false,
    stop_on_error: true,
  });
  const cell = document.createElement('section');
  cell.className = 'cell';
  cell.dataset.state = 'running'; // "done" once both the reply and the kernel's idle arrived
  const source = document.createElement('pre');
  source.className = 'source';
  source.dataset.prompt = '[*]';
  source.textContent = code;
  const outputs = document.createElement('div');
  outputs.className = 'outputs';
  cell.append(source, outputs);
  page.cells.append(cell);
  cells.set(request.header.msg_id, { cell, source, outputs, replied: false, idle: false });
  socket.send(JSON.stringify(request));
}

/** One message from the kernel: find the cell it answers and show it there. */
function receive(msg) {
  const type = msg.header.msg_type;
  const content = msg.content;
  if (type === 'status') showStatus(content.execution_state);
  const entry = cells.get(msg.parent_header?.msg_id);
  if (!entry) return; // another client's, or the kernel's own start-up
  switch (type) {
    case 'stream':
      appendStream(entry.outputs, content.name, content.text);
      break;
    case 'execute_result':
    case 'display_data':
      entry.outputs.append(renderData(content.data));
      break;
    case 'error':
      entry.outputs.append(renderError(content));
      break;
    case 'clear_output':
      entry.outputs.replaceChildren();
      break;
    case 'execute_reply':
      entry.replied = true;
      entry.cell.dataset.status = content.status; // ok, error or aborted
      entry.source.dataset.prompt = `[${content.execution_count ?? ' '}]`;
      break;
    case 'status':
      entry.idle = content.execution_state === 'idle';
      break;
  }
  if (entry.replied && entry.idle) {
    entry.cell.dataset.state = 'done';
    cells.delete(msg.parent_header.msg_id);
  }
}

function appendStream(outputs, name, text) {
  const last = outputs.lastElementChild;
  if (last?.classList.contains('stream') && last.classList.contains(name)) {
    last.textContent += text; // one block per run of the same stream, as Jupyter shows it
    return;
  }
  const block = document.createElement('pre');
  block.className = `stream ${name}`;
  block.textContent = text;
  outputs.append(block);
}

function renderData(data) {
  if (data['image/png']) {
    const image = document.createElement('img');
    image.className = 'result image';
    image.alt = data['text/plain'] ?? 'image';
    image.src = `data:image/png;base64,${data['image/png'].replace(/\s/g, '')}`;
    return image;
  }
  const block = document.createElement('pre');
  block.className = 'result text';
  block.textContent = data['text/plain'] ?? `(${Object.keys(data).join(', ')})`;
  return block;
}

function renderError({ ename, evalue, traceback }) {
  const block = document.createElement('pre');
  block.className = 'error';
  const name = document.createElement('span');
  name.className = 'ename';
  name.textContent = ename;
  const ansi = /\x1b\[[0-9;]*m/g; // IPython colours its tracebacks for terminals
  block.append(name, `: ${evalue}\n${(traceback ?? []).join('\n').replace(ansi, '')}`);
  return block;
}

page.form.addEventListener('submit', (event) => {
  event.preventDefault();
  const code = page.code.value;
  if (!code.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
  run(code);
  page.code.value = '';
});

page.code.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && event.shiftKey) {
    event.preventDefault();
    page.form.requestSubmit();
  }
});

// The kernel is this page's: stop it when the page goes away (closed, reloaded, navigated
// from). keepalive lets the request outlive the page.
addEventListener('pagehide', () => {
  socket?.close();
  if (kernel) {
    fetch(new URL(`api/kernels/${kernel.id}`, settings.server), {
      method: 'DELETE',
      headers: authHeaders(),
      keepalive: true,
    });
    kernel = null;
  }
});

start();

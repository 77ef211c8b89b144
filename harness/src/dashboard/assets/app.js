// The harness dashboard: views over the daemon's WebSocket API (no other API, no build step).
// Routes (location.hash): #/ projects · #/p/P services · #/p/P/s/S a service · #/p/P/graph the
// dependency graph · #/events the event stream · #/ops operations (#/p/P/ops, #/p/P/s/S/ops
// filtered) · #/op/ID one operation's timeline · #/drift drift findings · #/p/P/hosts the project's
// hosts (`hosts.check`) · #/p/P/network its WireGuard meshes (`network.list`).
import { Api } from './api.js';

const services = new Map(); // "project/name" -> ServiceEntry
const events = []; // the newest MAX_EVENTS events seen, oldest first
const MAX_EVENTS = 2000;
let graphCache = new Map(); // project -> dashboard.graph result
let logTail = null; // the running log follower, if the service view is open
const ops = new Map(); // operation id -> Operation (from ops.list: without steps)
let opsLoaded = false; // ops.list answered since the last (re)connect
let opPage = null; // { id, op (with steps), loading } while an operation page is open
const resources = new Map(); // "project/name" -> ResourceSample (from `top`, or status.resources)
let topTimer = null; // polls `top` every 2 s while a services view is open
let driftResult = null; // the last `drift` answer, { result, at } or { error }
// The last `hosts.check` / `network.list` answer of the open view: { project, loading, result, at,
// error, generation }; asked when the view opens and on its refresh button, never polled.
const checks = { hosts: null, network: null };

const $ = (id) => document.getElementById(id);

// h('tag.class', {attr: v, onclick: f}, ...children): DOM without innerHTML (names are user data).
function h(spec, attrs = {}, ...children) {
  const [tagId, ...classes] = spec.split('.');
  const [tag, id] = tagId.split('#');
  const el = document.createElement(tag);
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const svgNS = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// --- model -------------------------------------------------------------------------------------

const key = (e) => `${e.project}/${e.name}`;
const stateName = (e) => (e.state && e.state.kind) || 'unknown';
const healthName = (e) => (e.health && e.health.status) || 'unknown';
function where(e) {
  const l = e.location || {};
  if (l.kind === 'host') return { group: `host ${l.name}`, text: `${l.name} (${l.address})` };
  if (l.kind === 'container') return { group: `engine ${l.engine}`, text: `${l.engine}: ${l.name}` };
  return { group: 'local', text: 'local' };
}
function stateText(e) {
  const st = e.state || {};
  if (st.kind === 'exited') {
    if (st.signal !== undefined) return `exited (signal ${st.signal})`;
    if (st.code !== undefined) return `exited (${st.code})`;
  }
  if (st.kind === 'failed' && st.reason) return `failed: ${st.reason}`;
  return st.kind || 'unknown';
}
function duration(ms) {
  const sec = Math.max(0, Math.floor(ms / 1000));
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m${sec % 60}s`;
  if (sec < 86400) return `${Math.floor(sec / 3600)}h${Math.floor((sec % 3600) / 60)}m`;
  return `${Math.floor(sec / 86400)}d${Math.floor((sec % 86400) / 3600)}h`;
}
const uptime = (e) =>
  stateName(e) === 'running' && e.state_since ? duration(Date.now() - Date.parse(e.state_since)) : '';
const projects = () => [...new Set([...services.values()].map((e) => e.project))].sort();
const ofProject = (p) =>
  [...services.values()].filter((e) => e.project === p).sort((a, b) => a.name.localeCompare(b.name));

function applyEvent(ev) {
  events.push(ev);
  if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
  const entry = ev.data && ev.data.entry;
  if (entry) {
    if (ev.type === 'service.deregistered') services.delete(key(entry));
    else services.set(key(entry), entry);
  }
  if (ev.type === 'service.registered' || ev.type === 'service.deregistered') graphCache.clear();
  if (ev.type === 'operation' && ev.data) applyOperation(ev);
  scheduleRender();
}

// --- connection --------------------------------------------------------------------------------

const api = new Api({
  onEvent: applyEvent,
  onResync(snapshot) {
    services.clear();
    for (const e of snapshot.services) services.set(key(e), e);
    events.push({ seq: snapshot.seq, type: 'resync', time: new Date().toISOString(), data: {} });
    scheduleRender();
  },
  onState(text) {
    const el = $('connection');
    el.textContent = text;
    el.dataset.state = text === 'live' ? 'live' : 'down';
  },
  async onOpen() {
    // A fresh picture first, then every event after the last one seen (all of them on a
    // reconnect: the subscription replays from `since`).
    let since = api.lastSeq;
    if (since === null) {
      const hello = await api.request('hello');
      since = hello.last_seq;
      const recent = await api.request('events.list', { since: Math.max(0, since - 500), limit: 500 });
      for (const ev of recent.events) if (ev.seq <= since) events.push(ev);
      api.lastSeq = since;
    }
    const status = await api.request('status', {});
    for (const e of status.services) services.set(key(e), e);
    for (const r of status.resources || []) resources.set(`${r.project}/${r.service}`, r);
    opsLoaded = false;
    if (opPage) opPage.op = null;
    await api.subscribe(since);
    document.body.dataset.ready = 'true';
    scheduleRender();
  },
});

// --- rendering ---------------------------------------------------------------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    render();
  }, 0);
}

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (parts[0] === 'p' && parts[1] && parts[2] === 's' && parts[3] && parts[4] === 'ops')
    return { view: 'ops', project: parts[1], service: parts[3] };
  if (parts[0] === 'p' && parts[1] && parts[2] === 's' && parts[3])
    return { view: 'service', project: parts[1], service: parts[3] };
  if (parts[0] === 'p' && parts[1] && parts[2] === 'ops') return { view: 'ops', project: parts[1] };
  if (parts[0] === 'ops') return { view: 'ops' };
  if (parts[0] === 'op' && /^\d+$/.test(parts[1] || '')) return { view: 'op', id: Number(parts[1]) };
  if (parts[0] === 'drift') return { view: 'drift' };
  if (parts[0] === 'p' && parts[1] && parts[2] === 'graph') return { view: 'graph', project: parts[1] };
  if (parts[0] === 'p' && parts[1] && parts[2] === 'hosts') return { view: 'hosts', project: parts[1] };
  if (parts[0] === 'p' && parts[1] && parts[2] === 'network') return { view: 'network', project: parts[1] };
  if (parts[0] === 'p' && parts[1]) return { view: 'services', project: parts[1] };
  if (parts[0] === 'events') return { view: 'events' };
  return { view: 'projects' };
}
const href = (...parts) => '#/' + parts.map(encodeURIComponent).join('/');

function nav(r) {
  const links = [
    ['Projects', '#/', r.view === 'projects'],
    ['Operations', '#/ops', (r.view === 'ops' && !r.project) || r.view === 'op'],
    ['Drift', '#/drift', r.view === 'drift'],
    ['Events', '#/events', r.view === 'events'],
  ];
  if (r.project) {
    links.push([`${r.project}: services`, href('p', r.project), r.view === 'services']);
    links.push([`${r.project}: graph`, href('p', r.project, 'graph'), r.view === 'graph']);
    links.push([`${r.project}: operations`, href('p', r.project, 'ops'), r.view === 'ops' && !r.service]);
    links.push([`${r.project}: hosts`, href('p', r.project, 'hosts'), r.view === 'hosts']);
    links.push([`${r.project}: network`, href('p', r.project, 'network'), r.view === 'network']);
  }
  $('nav').replaceChildren(
    ...links.map(([t, l, cur]) => h('a', { href: l, 'aria-current': cur ? 'page' : null }, t)),
  );
}

let lastView = '';
let firstServices = false;
function render() {
  const r = route();
  const viewKey = JSON.stringify(r);
  if (viewKey !== lastView) {
    lastView = viewKey;
    stopLogTail();
    if (r.view === 'services') startTop(r.project);
    else stopTop();
    if (r.view !== 'op') opPage = null;
    if (r.view === 'drift') driftResult = null;
    if (r.view !== 'hosts') checks.hosts = null;
    if (r.view !== 'network') checks.network = null;
    nav(r);
  }
  const view = $('view');
  view.dataset.view = r.view;
  if (r.view === 'projects') view.replaceChildren(projectsView());
  else if (r.view === 'services') {
    view.replaceChildren(servicesView(r.project));
    // For bench/dashboard.sh: when the services view first showed services (ms since navigation).
    if (!firstServices && view.querySelector('#services tr[data-service]')) {
      firstServices = true;
      performance.mark('harness:services-rendered');
    }
  }
  else if (r.view === 'service') serviceView(view, r.project, r.service);
  else if (r.view === 'graph') graphView(view, r.project);
  else if (r.view === 'events') eventsView(view);
  else if (r.view === 'ops') opsView(view, r.project, r.service);
  else if (r.view === 'op') opView(view, r.id);
  else if (r.view === 'drift') driftView(view);
  else if (r.view === 'hosts') hostsView(view, r.project);
  else if (r.view === 'network') networkView(view, r.project);
}

function stateBadge(e) {
  return h(`span.badge.state-${stateName(e)}`, { 'data-field': 'state' }, stateText(e));
}
function healthBadge(e) {
  return h(`span.badge.health-${healthName(e)}`, { 'data-field': 'health' }, healthName(e));
}

function projectsView() {
  const list = projects();
  if (!list.length) return h('section', {}, h('h1', {}, 'Projects'), h('p', {}, 'No services yet: run `harness start`.'));
  return h(
    'section',
    {},
    h('h1', {}, 'Projects'),
    h(
      'table#projects',
      {},
      h('thead', {}, h('tr', {}, h('th', {}, 'project'), h('th', {}, 'services'), h('th', {}, 'running'), h('th', {}, 'not running'), h('th', {}, 'unhealthy'))),
      h(
        'tbody',
        {},
        list.map((p) => {
          const all = ofProject(p);
          const running = all.filter((e) => stateName(e) === 'running').length;
          const unhealthy = all.filter((e) => healthName(e) === 'unhealthy').length;
          return h(
            'tr',
            { 'data-project': p },
            h('td', {}, h('a', { href: href('p', p) }, p)),
            h('td', {}, all.length),
            h('td', {}, running),
            h('td', {}, all.length - running),
            h('td', {}, unhealthy),
          );
        }),
      ),
    ),
  );
}

function actionButtons(project, service, e) {
  const target = service ? `service ${service} of ${project}` : `every service of ${project}`;
  const active = (x) => ['running', 'starting', 'restarting'].includes(stateName(x));
  const buttons = [];
  if (service) {
    const services = [service];
    // `restart` starts a stopped or exited service with its last applied definition.
    if (!active(e)) buttons.push(['start', 'Start', `Start ${target}?`, () => api.request('restart', { project, services })]);
    else buttons.push(['stop', 'Stop', `Stop ${target}?`, () => api.request('stop', { project, services })]);
    buttons.push(['restart', 'Restart', `Restart ${target}?`, () => api.request('restart', { project, services })]);
  } else {
    const idle = () => ofProject(project).filter((x) => !active(x)).map((x) => x.name);
    buttons.push(['start', 'Start', `Start the services of ${project} that are not running?`, () => (idle().length ? api.request('restart', { project, services: idle() }) : Promise.resolve())]);
    buttons.push(['stop', 'Stop', `Stop ${target}?`, () => api.request('stop', { project, services: [] })]);
    buttons.push(['restart', 'Restart', `Restart ${target}?`, () => api.request('restart', { project, services: [] })]);
  }
  return h(
    'span.actions',
    {},
    buttons.map(([action, label, question, run]) =>
      h('button', { type: 'button', 'data-action': action, 'aria-label': `${label} ${target}`, onclick: () => confirmThen(question, run) }, label),
    ),
  );
}

function servicesView(project) {
  const rows = ofProject(project);
  const table = h(
    'table#services',
    {},
    h('thead', {}, h('tr', {}, ['service', 'state', 'health', 'where', 'endpoints', 'pid', 'restarts', 'uptime', 'CPU %', 'RSS', 'actions'].map((c) => h('th', { scope: 'col' }, c)))),
    h(
      'tbody',
      {},
      rows.map((e) =>
        h(
          'tr',
          { 'data-service': e.name },
          h('td', {}, h('a', { href: href('p', project, 's', e.name) }, e.name)),
          h('td', {}, stateBadge(e)),
          h('td', {}, healthBadge(e)),
          h('td', { 'data-field': 'where' }, where(e).text),
          h('td', { 'data-field': 'endpoints' }, (e.endpoints || []).map((p) => `${p.ip}:${p.port}`).join(' ')),
          h('td', { 'data-field': 'pid' }, (e.runtime && e.runtime.pid) || ''),
          h('td', { 'data-field': 'restarts' }, e.restart_count || 0),
          h('td', { 'data-field': 'uptime' }, uptime(e)),
          h('td.num', { 'data-field': 'cpu' }, cpuText(resources.get(key(e)))),
          h('td.num', { 'data-field': 'rss' }, rssText(resources.get(key(e)))),
          h('td', {}, actionButtons(project, e.name, e)),
        ),
      ),
    ),
  );
  return h(
    'section',
    {},
    h('div.title', {}, h('h1', {}, project), actionButtons(project, null, null)),
    h('div.scroll', {}, table),
  );
}

// --- service page: details, live log tail, health history --------------------------------------

function serviceView(view, project, name) {
  const e = services.get(`${project}/${name}`);
  let page = view.querySelector('section.service');
  if (!page || page.dataset.key !== `${project}/${name}`) {
    page = h(
      'section.service',
      { 'data-key': `${project}/${name}` },
      h('div.title', {}, h('h1', {}, name), h('a#service-ops', { href: href('p', project, 's', name, 'ops') }, 'operations'), h('span#service-actions')),
      h('dl#service-details'),
      h('h2', {}, 'Health history'),
      h('ol#health-history.history'),
      h('h2', {}, 'Log'),
      h(
        'div.logbar',
        {},
        h('input#log-search', { type: 'search', placeholder: 'search', 'aria-label': 'Search the log', oninput: filterLog }),
        h(
          'select#log-stream',
          { 'aria-label': 'Stream', onchange: filterLog },
          h('option', { value: '' }, 'stdout and stderr'),
          h('option', { value: 'stdout' }, 'stdout'),
          h('option', { value: 'stderr' }, 'stderr'),
        ),
        h('label', {}, h('input#log-follow', { type: 'checkbox', checked: true }), ' follow'),
      ),
      h('pre#log', { 'aria-label': 'Log lines', 'aria-live': 'off', tabindex: '0' }),
    );
    view.replaceChildren(page);
    startLogTail(project, name);
  }
  $('service-actions').replaceChildren(e ? actionButtons(project, name, e) : '');
  const details = e
    ? [
        ['state', stateBadge(e)],
        ['health', healthBadge(e)],
        ['health output', (e.health && e.health.last_output) || ''],
        ['where', where(e).text],
        ['endpoints', (e.endpoints || []).map((p) => `${p.name} ${p.ip}:${p.port}`).join(', ')],
        ['pid', (e.runtime && e.runtime.pid) || ''],
        ['restarts', e.restart_count || 0],
        ['uptime', uptime(e)],
        ['since', e.state_since || ''],
      ]
    : [['state', 'not in the registry']];
  $('service-details').replaceChildren(...details.flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-field': k }, v)]));
  const history = events.filter((ev) => ev.type === 'service.health' && ev.project === project && ev.service === name);
  $('health-history').replaceChildren(
    ...(history.length
      ? history.slice(-50).reverse().map((ev) =>
          h('li', {}, h('time', {}, new Date(ev.time).toLocaleTimeString()), ' ', `${ev.data.from} → ${ev.data.to}`, ev.data.entry && ev.data.entry.health && ev.data.entry.health.last_output ? ` — ${ev.data.entry.health.last_output}` : ''),
        )
      : [h('li', {}, 'no health changes seen')]),
  );
}

function filterLog() {
  const q = ($('log-search') || {}).value?.toLowerCase() || '';
  const stream = ($('log-stream') || {}).value || '';
  for (const line of $('log')?.children || []) {
    const hide = (stream && line.dataset.stream !== stream) || (q && !line.textContent.toLowerCase().includes(q));
    line.hidden = Boolean(hide);
  }
}

function stopLogTail() {
  if (logTail) logTail.stopped = true;
  logTail = null;
}

// Follows the service's log with `logs {follow}` (which continues across restarts of the
// service); after a lost connection it opens a new reader from the last line's time.
function startLogTail(project, name) {
  stopLogTail();
  const tail = { stopped: false, lastTime: null, seen: new Set() };
  logTail = tail;
  (async () => {
    while (!tail.stopped) {
      try {
        const params = { project, services: [name], follow: true };
        if (tail.lastTime) params.since = tail.lastTime;
        else params.tail = 200;
        let r = await api.request('logs', params);
        for (;;) {
          if (tail.stopped) return;
          appendLines(tail, r.lines);
          if (r.end) return;
          r = await api.request('logs', { project, session: r.session });
        }
      } catch (e) {
        if (tail.stopped) return;
        await api.opened();
        await new Promise((res) => setTimeout(res, 200));
      }
    }
  })();
}

function appendLines(tail, lines) {
  const log = $('log');
  if (!log || !lines.length) return;
  const q = $('log-search').value.toLowerCase();
  const stream = $('log-stream').value;
  const frag = document.createDocumentFragment();
  for (const l of lines) {
    const id = `${l.time}|${l.stream}|${l.text}`;
    if (tail.seen.has(id)) continue;
    tail.seen.add(id);
    tail.lastTime = l.time;
    const line = h(`span.line.${l.stream}`, { 'data-stream': l.stream }, h('time', {}, l.time.slice(11, 23)), ' ', l.text, '\n');
    line.hidden = Boolean((stream && l.stream !== stream) || (q && !l.text.toLowerCase().includes(q)));
    frag.append(line);
  }
  log.append(frag);
  while (log.childElementCount > 5000) log.firstElementChild.remove();
  if (tail.seen.size > 20000) tail.seen.clear();
  if ($('log-follow').checked) log.scrollTop = log.scrollHeight;
}

// --- dependency graph: columns by start wave, lanes by where services run ----------------------

async function graphView(view, project) {
  let g = graphCache.get(project);
  if (!g) {
    if (!view.querySelector('svg')) view.replaceChildren(h('p', {}, 'loading the graph…'));
    try {
      g = await api.request('dashboard.graph', { project });
    } catch (e) {
      view.replaceChildren(h('p.error', {}, `graph: ${e.message}`));
      return;
    }
    graphCache.set(project, g);
    if (route().view !== 'graph') return;
  }
  const entry = (n) => services.get(`${project}/${n}`);
  const lanes = [...new Set(g.waves.flat().map((n) => (entry(n) ? where(entry(n)).group : 'local')))].sort();
  const W = 190, NW = 150, NH = 34, GAP = 12, LX = 110, TOP = 30;
  const waveOf = new Map();
  g.waves.forEach((w, i) => w.forEach((n) => waveOf.set(n, i)));
  const pos = new Map();
  let y = TOP;
  const laneBoxes = [];
  for (const lane of lanes) {
    const perWave = g.waves.map((w) => w.filter((n) => (entry(n) ? where(entry(n)).group : 'local') === lane));
    const rows = Math.max(1, ...perWave.map((w) => w.length));
    perWave.forEach((w, i) => w.forEach((n, j) => pos.set(n, { x: LX + i * W, y: y + GAP + j * (NH + GAP) })));
    const height = rows * (NH + GAP) + GAP;
    laneBoxes.push({ lane, y, height });
    y += height + GAP;
  }
  const width = LX + g.waves.length * W + 20;
  const svg = s('svg', { viewBox: `0 0 ${width} ${y}`, width, height: y, role: 'img', 'aria-label': `Dependency graph of ${project}` });
  g.waves.forEach((_, i) => svg.append(s('text', { x: LX + i * W + NW / 2, y: 18, class: 'wave', 'text-anchor': 'middle' }, `wave ${i + 1}`)));
  for (const b of laneBoxes) {
    svg.append(s('rect', { x: 4, y: b.y, width: width - 8, height: b.height, class: 'lane', rx: 6 }));
    svg.append(s('text', { x: 12, y: b.y + 20, class: 'lane-label' }, b.lane));
  }
  for (const [n, deps] of Object.entries(g.depends_on)) {
    const to = pos.get(n);
    for (const [d, cond] of Object.entries(deps)) {
      const from = pos.get(d);
      if (!from || !to) continue;
      const x1 = from.x + NW, y1 = from.y + NH / 2, x2 = to.x, y2 = to.y + NH / 2;
      svg.append(s('path', { d: `M${x1},${y1} C${x1 + 30},${y1} ${x2 - 30},${y2} ${x2},${y2}`, class: `edge cond-${cond}` }, s('title', {}, `${n} waits for ${d} (${cond})`)));
    }
  }
  for (const [n, p] of pos) {
    const e = entry(n);
    const st = e ? stateName(e) : 'unknown';
    const a = s('a', { href: href('p', project, 's', n), 'data-node': n, 'aria-label': `${n}: ${st}` });
    a.append(s('rect', { x: p.x, y: p.y, width: NW, height: NH, rx: 6, class: `node state-${st}` }));
    a.append(s('text', { x: p.x + 8, y: p.y + 15, class: 'node-name' }, n.length > 20 ? n.slice(0, 19) + '…' : n));
    a.append(s('text', { x: p.x + 8, y: p.y + 28, class: 'node-state' }, e ? `${st} · ${healthName(e)}` : 'not in the registry'));
    svg.append(a);
  }
  const legend = h('p.legend', {}, 'Columns are start waves; a service starts once the services it waits for are ready (dashed: waits for healthy). Rows group services by where they run.');
  view.replaceChildren(h('section', {}, h('h1', {}, `${project}: dependency graph`), legend, h('div.scroll.graph', {}, svg)));
}

// --- event stream with filters ------------------------------------------------------------------

const eventFilter = { type: '', project: '', text: '' };
function eventsView(view) {
  let page = view.querySelector('section.events');
  if (!page) {
    const types = ['service.registered', 'service.updated', 'service.state', 'service.health', 'service.deregistered', 'service.watch', 'deployment.progress', 'daemon.notice', 'operation'];
    page = h(
      'section.events',
      {},
      h('h1', {}, 'Events'),
      h(
        'div.logbar',
        {},
        h('select#event-type', { 'aria-label': 'Event type', onchange: (ev) => { eventFilter.type = ev.target.value; scheduleRender(); } }, h('option', { value: '' }, 'all types'), types.map((t) => h('option', { value: t }, t))),
        h('select#event-project', { 'aria-label': 'Project', onchange: (ev) => { eventFilter.project = ev.target.value; scheduleRender(); } }),
        h('input#event-search', { type: 'search', placeholder: 'service or text', 'aria-label': 'Search events', oninput: (ev) => { eventFilter.text = ev.target.value.toLowerCase(); scheduleRender(); } }),
      ),
      h('div.scroll', {}, h('table#events', {}, h('thead', {}, h('tr', {}, ['seq', 'time', 'type', 'project', 'service', 'what'].map((c) => h('th', { scope: 'col' }, c)))), h('tbody'))),
    );
    view.replaceChildren(page);
  }
  const sel = $('event-project');
  const current = eventFilter.project;
  sel.replaceChildren(h('option', { value: '' }, 'all projects'), projects().map((p) => h('option', { value: p, selected: p === current }, p)));
  const what = (ev) => {
    const d = ev.data || {};
    if (ev.type === 'service.state' || ev.type === 'service.health') return `${d.from && d.from.kind ? d.from.kind : d.from} → ${d.to && d.to.kind ? d.to.kind : d.to}`;
    if (ev.type === 'resync') return 'resynced: events were pruned while disconnected';
    if (ev.type === 'operation') return `operation ${d.id} ${d.kind}: ${d.outcome ? d.outcome.status : ''}${d.step ? ` · ${d.step.kind}${d.step.service ? ' ' + d.step.service : ''}` : ''}`;
    return d.message || d.phase || (d.entry ? stateText(d.entry) : '');
  };
  const rows = events
    .filter((ev) => !eventFilter.type || ev.type === eventFilter.type)
    .filter((ev) => !eventFilter.project || ev.project === eventFilter.project)
    .filter((ev) => !eventFilter.text || `${ev.service || ''} ${what(ev)}`.toLowerCase().includes(eventFilter.text))
    .slice(-500)
    .reverse();
  page.querySelector('tbody').replaceChildren(
    ...rows.map((ev) =>
      h('tr', { 'data-seq': ev.seq, 'data-type': ev.type }, h('td', {}, ev.seq), h('td', {}, new Date(ev.time).toLocaleTimeString()), h('td', {}, ev.type), h('td', {}, ev.project || ''), h('td', {}, ev.service || ''), h('td', {}, what(ev))),
    ),
  );
}

// --- resources from `top`: polled every 2 s while a services view is open ----------------------

function cpuText(r) {
  return r && typeof r.cpu_percent === 'number' ? r.cpu_percent.toFixed(1) : '–';
}
function rssText(r) {
  if (!r || typeof r.rss_bytes !== 'number') return '–';
  const mib = r.rss_bytes / 1048576;
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${mib.toFixed(1)} MiB`;
}
function startTop(project) {
  stopTop();
  const poll = async () => {
    try {
      const r = await api.request('top', { project });
      for (const x of r.services) resources.set(`${x.project}/${x.service}`, x);
      scheduleRender();
    } catch (e) {
      // Not connected or refused: the columns keep their last values (or "–").
    }
  };
  poll();
  topTimer = setInterval(poll, 2000);
}
function stopTop() {
  if (topTimer) clearInterval(topTimer);
  topTimer = null;
}

// --- operations: the list (live from `operation` events) and one operation's timeline -----------

function applyOperation(ev) {
  const d = ev.data;
  let op = ops.get(d.id);
  if (!op) {
    op = { id: d.id, kind: d.kind, project: d.project, services: [], started_at: ev.time, outcome: d.outcome, steps: [] };
    ops.set(d.id, op);
    // The event carries no service list: fetch the operation once for it.
    api.request('ops.get', { id: d.id }).then((full) => { ops.set(d.id, { ...full, steps: [] }); scheduleRender(); }, () => {});
  }
  op.outcome = d.outcome;
  if (d.outcome && d.outcome.status !== 'running' && !op.ended_at) op.ended_at = ev.time;
  if (opPage && opPage.id === d.id && opPage.op) {
    const o = opPage.op;
    o.outcome = d.outcome;
    if (d.outcome.status !== 'running' && !o.ended_at) o.ended_at = ev.time;
    if (d.step && typeof d.index === 'number') {
      if (d.index <= o.steps.length) o.steps[d.index] = d.step;
      else opPage.op = null; // missed steps: fetch the whole operation again
    }
  }
}

async function loadOps() {
  if (opsLoaded) return;
  opsLoaded = true;
  try {
    const r = await api.request('ops.list', { limit: 200 });
    for (const o of r.operations) ops.set(o.id, { ...o, steps: [] });
  } catch (e) {
    opsLoaded = false;
    toast(`operations: ${e.message}`, true);
    return;
  }
  scheduleRender();
}

const opDuration = (o) =>
  o.started_at ? `${((Date.parse(o.ended_at || new Date().toISOString()) - Date.parse(o.started_at)) / 1000).toFixed(1)}s` : '';
// The requesting client in a few words: a browser's user agent becomes "dashboard".
function requesterShort(r) {
  const c = (r && (r.client || r.peer)) || '';
  if (c.startsWith('Mozilla/')) return 'dashboard';
  return c.length > 32 ? c.slice(0, 31) + '…' : c;
}
const outcomeText = (o) => (o.outcome ? o.outcome.status + (o.outcome.reason ? `: ${o.outcome.reason}` : '') : '');

function opsView(view, project, service) {
  loadOps();
  const list = [...ops.values()]
    .filter((o) => !project || o.project === project)
    .filter((o) => !service || (o.services || []).includes(service) || !(o.services || []).length)
    .sort((a, b) => b.id - a.id)
    .slice(0, 200);
  const title = service ? `Operations of ${service} (${project})` : project ? `Operations of ${project}` : 'Operations';
  const note = service ? h('p.legend', {}, 'Operations naming this service, and those that name no services (the whole project).') : null;
  const table = h(
    'table#ops',
    {},
    h('thead', {}, h('tr', {}, ['id', 'kind', 'project', 'services', 'started', 'duration', 'outcome', 'by'].map((c) => h('th', { scope: 'col' }, c)))),
    h(
      'tbody',
      {},
      list.map((o) =>
        h(
          `tr${o.outcome && o.outcome.status === 'running' ? '.running' : ''}`,
          { 'data-op': o.id, 'data-outcome': o.outcome ? o.outcome.status : '' },
          h('td', {}, h('a', { href: `#/op/${o.id}`, 'aria-label': `Operation ${o.id}` }, o.id)),
          h('td', {}, o.kind),
          h('td', {}, o.project || ''),
          h('td', {}, (o.services || []).join(' ') || (o.project ? 'all' : '')),
          h('td', {}, o.started_at ? new Date(o.started_at).toLocaleTimeString() : ''),
          h('td', {}, opDuration(o)),
          h('td', {}, h(`span.badge.op-${o.outcome ? o.outcome.status : 'unknown'}`, { 'data-field': 'outcome' }, outcomeText(o))),
          h('td', { title: (o.requester && o.requester.client) || '' }, requesterShort(o.requester)),
        ),
      ),
    ),
  );
  view.replaceChildren(
    h('section.ops', {}, h('h1', {}, title), note, list.length ? h('div.scroll', {}, table) : h('p', {}, 'No operations yet.')),
  );
}

function opView(view, id) {
  if (!opPage || opPage.id !== id) opPage = { id, op: null, loading: false };
  const page = opPage;
  if (!page.op) {
    if (!page.loading) {
      page.loading = true;
      api.request('ops.get', { id }).then(
        (op) => { page.op = op; page.loading = false; scheduleRender(); },
        (e) => { page.loading = false; page.error = e.message; scheduleRender(); },
      );
    }
    if (page.error) view.replaceChildren(h('p.error', {}, `operation ${id}: ${page.error}`));
    else if (!view.querySelector('section.op')) view.replaceChildren(h('p', {}, 'loading the operation…'));
    return;
  }
  const o = page.op;
  const running = o.outcome && o.outcome.status === 'running';
  const cancel = running
    ? h('button#op-cancel', {
        type: 'button',
        'aria-label': `Cancel operation ${o.id}`,
        onclick: () => confirmThen(`Cancel operation ${o.id} (${o.kind}${o.project ? ' of ' + o.project : ''})?`, (rollback) => api.request('ops.cancel', { id: o.id, rollback }), { rollback: true }),
      }, 'Cancel')
    : null;
  const details = [
    ['kind', o.kind],
    ['project', o.project || ''],
    ['services', (o.services || []).join(', ') || 'all'],
    ['outcome', h(`span.badge.op-${o.outcome.status}`, { 'data-field': 'outcome' }, outcomeText(o))],
    ['started', o.started_at],
    ['duration', opDuration(o)],
    ['requested by', [requesterShort({ client: o.requester.client }), o.requester.peer, o.requester.token && `token ${o.requester.token}`].filter(Boolean).join(' · ')],
  ];
  if (o.steps_dropped) details.push(['steps not kept', `${o.steps_dropped} health checks beyond the first 200 per service`]);
  const steps = o.steps.filter(Boolean);
  view.replaceChildren(
    h(
      'section.op',
      { 'data-op': o.id },
      h('div.title', {}, h('h1', {}, `Operation ${o.id}`), cancel),
      h('dl#op-details', {}, details.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      h('h2', {}, 'Timeline'),
      h('div.scroll.gantt', {}, gantt(o, steps)),
      ganttLegend(),
      h('h2', {}, 'Steps'),
      h(
        'div.scroll',
        {},
        h(
          'table#op-steps',
          {},
          h('thead', {}, h('tr', {}, ['service', 'host', 'kind', 'attempt', 'start', 'duration', 'result', 'output'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            {},
            steps.map((st) =>
              h(
                'tr',
                { 'data-kind': st.kind, 'data-service': st.service || '' },
                h('td', {}, st.service || ''),
                h('td', {}, st.host || 'local'),
                h('td', {}, st.kind),
                h('td', {}, st.attempt || ''),
                h('td', {}, `+${((Date.parse(st.started_at) - Date.parse(o.started_at)) / 1000).toFixed(2)}s`),
                h('td', {}, stepDuration(st)),
                h('td', {}, st.result.status + (st.result.reason ? `: ${st.result.reason}` : '')),
                h('td.output', {}, st.detail || ''),
              ),
            ),
          ),
        ),
      ),
    ),
  );
}

const stepDuration = (st) =>
  `${((Date.parse(st.ended_at || new Date().toISOString()) - Date.parse(st.started_at)) / 1000).toFixed(2)}s${st.ended_at ? '' : '…'}`;

// One row per service (and one for steps of no service); each step a bar from its start to its
// end (or now), coloured by kind; every health-check attempt is its own bar.
function gantt(o, steps) {
  const t0 = Date.parse(o.started_at);
  const now = Date.now();
  const end = Math.max(t0 + 100, Date.parse(o.ended_at || '') || now, ...steps.map((st) => Date.parse(st.ended_at || '') || now));
  const rows = [...new Set(steps.map((st) => (st.service ? `${st.service}${st.host ? ' @ ' + st.host : ''}` : '(operation)')))];
  if (!rows.length) rows.push('(operation)');
  const LX = 170, W = 900, RH = 26, TOP = 24;
  const height = TOP + rows.length * RH + 8;
  const x = (t) => LX + ((t - t0) / (end - t0)) * W;
  const svg = s('svg', { viewBox: `0 0 ${LX + W + 10} ${height}`, width: LX + W + 10, height, role: 'img', 'aria-label': `Timeline of operation ${o.id}: ${steps.length} steps over ${((end - t0) / 1000).toFixed(1)} s` });
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((end - t0) * i) / 4;
    svg.append(s('line', { x1: x(t), y1: TOP - 6, x2: x(t), y2: height, class: 'tick' }));
    svg.append(s('text', { x: x(t), y: 14, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle', class: 'wave' }, `${((t - t0) / 1000).toFixed(1)}s`));
  }
  rows.forEach((r, i) => svg.append(s('text', { x: 6, y: TOP + i * RH + 17, class: 'lane-label' }, r.length > 24 ? r.slice(0, 23) + '…' : r)));
  for (const st of steps) {
    const row = rows.indexOf(st.service ? `${st.service}${st.host ? ' @ ' + st.host : ''}` : '(operation)');
    const a = Date.parse(st.started_at);
    const b = Date.parse(st.ended_at || '') || now;
    const bx = x(a);
    const bw = Math.max(2, x(b) - bx);
    const tip = `${st.service || 'operation'} · ${st.kind}${st.attempt ? ' #' + st.attempt : ''} · ${stepDuration(st)} · ${st.result.status}${st.detail ? ' · ' + st.detail : ''}`;
    svg.append(s('rect', { x: bx, y: TOP + row * RH + 4, width: bw, height: RH - 8, rx: 2, class: `bar kind-${st.kind} result-${st.result.status}`, 'data-kind': st.kind }, s('title', {}, tip)));
  }
  return svg;
}

function ganttLegend() {
  return h(
    'p.legend',
    {},
    [['waiting_for_dependencies', 'waiting for dependencies (its wave)'], ['spawning', 'spawn'], ['health_check', 'health check (each attempt; red: failed)'], ['ready', 'ready'], ['stopping', 'stopping']].map(([k, t]) =>
      h('span.key', {}, h(`span.swatch.kind-${k}`, { 'aria-hidden': 'true' }), ` ${t} `),
    ),
  );
}

// --- drift: findings (read-only; the repairs are CLI commands) ----------------------------------

function driftView(view) {
  if (!driftResult) {
    driftResult = { loading: true };
    api.request('drift', {}).then(
      (result) => { driftResult = { result, at: new Date() }; scheduleRender(); },
      (e) => { driftResult = { error: e.message }; scheduleRender(); },
    );
  }
  const again = h('button#drift-again', { type: 'button', 'aria-label': 'Check for drift again', disabled: Boolean(driftResult.loading), onclick: () => { driftResult = null; scheduleRender(); } }, 'Check again');
  const head = h('div.title', {}, h('h1', {}, 'Drift'), again);
  const intro = h('p.legend', {}, 'What the registry records against what runs (processes, remote run directories, containers). Read-only: each finding lists the commands that resolve it.');
  if (driftResult.loading && !view.querySelector('section.drift table, section.drift #drift-none')) {
    view.replaceChildren(h('section.drift', {}, head, intro, h('p', {}, 'probing…')));
    return;
  }
  if (driftResult.loading) return;
  if (driftResult.error) {
    view.replaceChildren(h('section.drift', {}, head, intro, h('p.error', {}, `drift: ${driftResult.error}`)));
    return;
  }
  const r = driftResult.result;
  const summary = h(
    'div',
    {},
    h('p#drift-summary', {}, `${r.findings.length} finding${r.findings.length === 1 ? '' : 's'} · ${r.entries} registry entries · ${r.elapsed_ms} ms · at ${driftResult.at.toLocaleTimeString()}`),
    h('ul#drift-probes.probes', { 'aria-label': 'Places probed' }, r.probes.map((p) => h(`li${p.error ? '.error' : ''}`, {}, `${p.place}: ${p.seen} seen in ${p.elapsed_ms} ms${p.error ? ' — ' + p.error : ''}`))),
  );
  const body = r.findings.length
    ? h(
        'div.scroll',
        {},
        h(
          'table#drift',
          {},
          h('thead', {}, h('tr', {}, ['category', 'where', 'service', 'what', 'evidence', 'resolve with'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            {},
            r.findings.map((f) =>
              h(
                'tr',
                { 'data-finding': f.id, 'data-category': f.category },
                h('td', {}, h(`span.badge.drift-${f.category}`, {}, f.category.replace('_', ' '))),
                h('td', {}, f.place),
                h('td', {}, f.project ? `${f.project}/${f.service || ''}` : ''),
                h('td.wrap', {}, f.summary),
                h('td.wrap', {}, h('ul.evidence', {}, f.evidence.map((e) => h('li', {}, e)))),
                h('td.wrap', {}, f.resolve.map((c) => h('code.cmd', {}, c))),
              ),
            ),
          ),
        ),
      )
    : h('p#drift-none', {}, 'No drift: the registry matches what runs.');
  view.replaceChildren(h('section.drift', {}, head, intro, summary, body));
}

// --- hosts and networks: asked once per visit and on "Check again" (they run commands on hosts) --

// Asks `method` {project} into checks[slot]: when the view opens (or shows another project) and,
// with `force`, on its "Check again" button; the last answer stays shown while a new one comes.
function ask(slot, method, project, force = false) {
  const cur = checks[slot];
  if (cur && cur.project === project && (cur.loading || !force)) return;
  const same = cur && cur.project === project;
  const generation = ((cur && cur.generation) || 0) + 1;
  checks[slot] = { project, loading: true, generation, result: same ? cur.result : null, at: same ? cur.at : null };
  const settle = (v) => {
    const c = checks[slot];
    if (!c || c.generation !== generation) return; // left the view, or asked again
    checks[slot] = { project, generation, result: c.result, at: c.at, ...v };
    scheduleRender();
  };
  api.request(method, { project }).then(
    (result) => settle({ result, at: new Date() }),
    (e) => settle({ error: e.message }),
  );
}
const yesNo = (v) => (v === true ? 'yes' : v === false ? 'no' : '–');
function bytes(n) {
  if (typeof n !== 'number') return '–';
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}
function refreshButton(id, label, slot, again) {
  return h(`button#${id}`, { type: 'button', 'aria-label': label, disabled: Boolean(slot && slot.loading), onclick: again }, slot && slot.loading ? 'Checking…' : 'Check again');
}
function answeredLine(slot, text) {
  const parts = [];
  if (slot.loading) parts.push('checking…');
  if (slot.error) parts.push(`failed: ${slot.error}`);
  if (slot.at) parts.push(`${text} at ${slot.at.toLocaleTimeString()}`);
  return h(`p.status${slot.error ? '.error' : ''}`, { 'data-generation': slot.generation, 'data-loading': slot.loading ? 'true' : 'false' }, parts.join(' · '));
}

function hostsView(view, project) {
  ask('hosts', 'hosts.check', project);
  const slot = checks.hosts;
  const again = refreshButton('hosts-refresh', `Check the hosts of ${project} again`, slot, () => { ask('hosts', 'hosts.check', project, true); scheduleRender(); });
  const r = slot.result;
  const head = h('div.title', {}, h('h1', {}, `${project}: hosts`), again);
  const intro = h('p.legend', {}, 'Each hosts entry checked from the daemon’s machine over fresh ssh connections: reachable, authenticated, sudo -n, docker (and as whom), latency (best of three round trips).');
  const line = answeredLine(slot, r ? `${r.hosts.length} host${r.hosts.length === 1 ? '' : 's'} in ${r.elapsed_ms} ms` : '');
  if (!r) {
    view.replaceChildren(h('section.hosts', {}, head, intro, line));
    return;
  }
  if (!r.hosts.length) {
    view.replaceChildren(h('section.hosts', {}, head, intro, line, h('p#hosts-none', {}, `Project ${project} has no hosts: its services run on this machine.`)));
    return;
  }
  const docker = (d) => (!d ? '–' : d.reachable ? `yes, as ${d.as_user || '?'} (${d.server_version || '?'})` : d.required ? 'no (needed)' : 'no');
  const table = h(
    'table#hosts',
    {},
    h('thead', {}, h('tr', {}, ['host', 'address', 'user', 'reachable', 'authenticated', 'sudo -n', 'docker', 'latency', 'connect', 'problems'].map((c) => h('th', { scope: 'col' }, c)))),
    h(
      'tbody',
      {},
      r.hosts.map((x) =>
        h(
          `tr${x.ok ? '' : '.bad'}`,
          { 'data-host': x.host, 'data-ok': String(x.ok) },
          h('td', {}, x.host),
          h('td', { 'data-field': 'address' }, `${x.address}:${x.port}`),
          h('td', { 'data-field': 'user' }, x.user || ''),
          h('td', { 'data-field': 'reachable' }, h(`span.badge.${x.reachable ? 'yes' : 'no'}`, {}, yesNo(x.reachable))),
          h('td', { 'data-field': 'authenticated' }, yesNo(x.reachable ? x.authenticated : null)),
          h('td', { 'data-field': 'sudo' }, yesNo(x.sudo)),
          h('td', { 'data-field': 'docker' }, docker(x.docker)),
          h('td.num', { 'data-field': 'latency' }, typeof x.latency_ms === 'number' ? `${x.latency_ms} ms` : '–'),
          h('td.num', { 'data-field': 'connect' }, typeof x.connect_ms === 'number' ? `${x.connect_ms} ms` : '–'),
          h('td.wrap', { 'data-field': 'problems' }, x.problems.map((p) => h('div.problem', {}, h('span.error', {}, `${p.check}: ${p.error}`), h('div.legend', {}, `hint: ${p.hint}`)))),
        ),
      ),
    ),
  );
  view.replaceChildren(h('section.hosts', {}, head, intro, line, h('div.scroll', {}, table)));
}

function ageText(s) {
  if (typeof s !== 'number') return 'never';
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function networkView(view, project) {
  ask('network', 'network.list', project);
  const slot = checks.network;
  const again = refreshButton('network-refresh', `Show the networks of ${project} again`, slot, () => { ask('network', 'network.list', project, true); scheduleRender(); });
  const r = slot.result;
  const head = h('div.title', {}, h('h1', {}, `${project}: network`), again);
  const intro = h('p.legend', {}, 'The project’s WireGuard meshes: members and mesh addresses, and, while a mesh is up, each member’s peers as wg show reports them there.');
  const line = answeredLine(slot, r ? `${r.networks.length} network${r.networks.length === 1 ? '' : 's'} in ${r.elapsed_ms} ms` : '');
  if (!r) {
    view.replaceChildren(h('section.network', {}, head, intro, line));
    return;
  }
  if (!r.networks.length) {
    view.replaceChildren(h('section.network', {}, head, intro, line, h('p#network-none', {}, `No networks: project ${project} defines no wireguard network (networks: with type: wireguard).`)));
    return;
  }
  const meshes = r.networks.map((n) => {
    const members = h(
      'table.mesh-members',
      { 'data-network': n.network, 'aria-label': `Members of ${n.network}` },
      h('thead', {}, h('tr', {}, ['member', 'address', 'interface', 'mode', 'endpoint', 'via', 'interface up'].map((c) => h('th', { scope: 'col' }, c)))),
      h(
        'tbody',
        {},
        n.members.map((m) =>
          h(
            'tr',
            { 'data-member': m.member },
            h('td', {}, m.member),
            h('td', { 'data-field': 'address' }, m.address),
            h('td', { 'data-field': 'interface' }, m.interface),
            h('td', { 'data-field': 'mode' }, m.mode || '–'),
            h('td', { 'data-field': 'endpoint' }, m.endpoint || ''),
            h('td', { 'data-field': 'via' }, m.relay || ''),
            h('td.wrap', { 'data-field': 'up' }, m.interface_up ? h('span.badge.yes', {}, 'yes') : m.error ? h('span.error', {}, `no: ${m.error}`) : '–'),
          ),
        ),
      ),
    );
    const peerRows = n.members.flatMap((m) =>
      m.peers.map((p) =>
        h(
          'tr',
          { 'data-member': m.member, 'data-peer': p.member || p.public_key },
          h('td', {}, m.member),
          h('td', { 'data-field': 'peer' }, p.member || `${p.public_key.slice(0, 10)}…`),
          h('td', { 'data-field': 'endpoint' }, p.endpoint || ''),
          h('td', { 'data-field': 'allowed' }, p.allowed_ips),
          h('td.num', { 'data-field': 'handshake' }, ageText(p.handshake_age_s)),
          h('td.num', { 'data-field': 'rx' }, bytes(p.rx_bytes)),
          h('td.num', { 'data-field': 'tx' }, bytes(p.tx_bytes)),
        ),
      ),
    );
    const peers = peerRows.length
      ? h(
          'table.mesh-peers',
          { 'data-network': n.network, 'aria-label': `Peers in ${n.network}` },
          h('thead', {}, h('tr', {}, ['member', 'peer', 'endpoint', 'allowed ips', 'latest handshake', 'received', 'sent'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, peerRows),
        )
      : h('p.legend', {}, n.up ? 'No peers reported.' : 'The mesh is not up: `harness start` brings it up with the services that use it.');
    return h(
      'div.mesh',
      { 'data-network': n.network },
      h('h2', {}, `${n.network} `, h('span.legend', {}, `${n.subnet} · UDP ${n.listen_port} · `), h(`span.badge.${n.up ? 'yes' : 'no'}`, {}, n.up ? 'up' : 'down')),
      h('div.scroll', {}, members),
      h('div.scroll', {}, peers),
    );
  });
  view.replaceChildren(h('section.network', {}, head, intro, line, meshes));
}

// --- confirmation -------------------------------------------------------------------------------

// `opts.rollback`: show the rollback checkbox; `run` gets its value.
function confirmThen(question, run, opts = {}) {
  const dialog = $('confirm');
  $('confirm-text').textContent = question;
  $('confirm-rollback-label').hidden = !opts.rollback;
  $('confirm-rollback').checked = false;
  const done = (ok) => {
    dialog.close();
    $('confirm-ok').onclick = null;
    $('confirm-cancel').onclick = null;
    const rollback = Boolean(opts.rollback) && $('confirm-rollback').checked;
    if (ok)
      run(rollback).then(
        () => toast('done'),
        (e) => toast(`failed: ${e.message}`, true),
      );
  };
  $('confirm-ok').onclick = () => done(true);
  $('confirm-cancel').onclick = () => done(false);
  dialog.showModal();
}

function toast(text, error = false) {
  const t = h(`div.toast${error ? '.error' : ''}`, { role: 'status' }, text);
  document.body.append(t);
  setTimeout(() => t.remove(), 2500);
}

// --- start ----------------------------------------------------------------------------------------

window.addEventListener('hashchange', scheduleRender);
setInterval(() => {
  for (const cell of document.querySelectorAll('#services tr[data-service]')) {
    const e = services.get(`${route().project}/${cell.dataset.service}`);
    const up = cell.querySelector('[data-field=uptime]');
    if (e && up) up.textContent = uptime(e);
  }
  // A running operation's duration and bars grow even when no event arrives.
  const r = route();
  if (r.view === 'op' && opPage && opPage.op && opPage.op.outcome.status === 'running') scheduleRender();
  if (r.view === 'ops' && [...ops.values()].some((o) => o.outcome && o.outcome.status === 'running')) scheduleRender();
}, 1000);
$('logout').addEventListener('click', async () => {
  await fetch('/logout', { method: 'POST', credentials: 'same-origin' });
  location.replace('/login');
});
render();
api.start();

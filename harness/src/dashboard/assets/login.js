// Trades the one-time code in the URL fragment for a session cookie, then opens the dashboard.
// The fragment is never sent to the server and is removed from the address bar and history first.
const message = document.getElementById('login-message');

function say(text, error) {
  message.textContent = text;
  message.classList.toggle('error', error);
}

async function login(code) {
  say('Logging in…', false);
  const response = await fetch('/login', {
    method: 'POST',
    headers: { 'Content-Type': 'text/plain' },
    body: 'code=' + code,
    credentials: 'same-origin',
    cache: 'no-store',
  });
  if (response.status === 204) {
    location.replace('/');
    return;
  }
  say((await response.text()).trim() || `login refused (${response.status})`, true);
}

function fromFragment() {
  const match = /(?:^#|&)code=([0-9a-fA-F]+)/.exec(location.hash);
  history.replaceState(null, '', '/login');
  if (match) login(match[1]).catch((e) => say('login failed: ' + e, true));
  else say('No login code. Run `harness dashboard` for a one-time link.', false);
}

// A second link opened in the same tab changes only the fragment.
window.addEventListener('hashchange', fromFragment);
fromFragment();

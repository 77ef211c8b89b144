// Trades the one-time code in the URL fragment for a session cookie, then opens the dashboard.
// The fragment is never sent to the server and is removed from the address bar and history first.
const match = /(?:^#|&)code=([0-9a-fA-F]+)/.exec(location.hash);
history.replaceState(null, '', '/login');
const message = document.getElementById('login-message');

async function login(code) {
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
  message.textContent = (await response.text()).trim() || `login refused (${response.status})`;
  message.classList.add('error');
}

if (match) {
  login(match[1]).catch((e) => {
    message.textContent = 'login failed: ' + e;
    message.classList.add('error');
  });
} else {
  message.textContent = 'No login code. Run `harness dashboard` for a one-time link.';
}

import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { currentSession, login, logout, whenSessionEnds } from './api';
import { messageOf } from './components';
import { AccessPage } from './pages/access';
import { AuditPage } from './pages/audit';
import { EnclavePage } from './pages/enclave';
import { ExpiryPage } from './pages/expiry';
import { FleetPage } from './pages/fleet';
import { KeystorePage, KeystoresPage } from './pages/keystores';
import { RobotPage } from './pages/robot';
import type { Session } from './types';
import './style.css';

function LoginForm(props: { message: string; onLogin: (s: Session) => void }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError('');
    try {
      props.onLogin(await login(username, password));
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
      setPassword('');
    }
  };
  return (
    <main class="login" id="main">
      <h1>Enclave server</h1>
      {props.message && (
        <p class="notice" role="status" id="login-message">
          {props.message}
        </p>
      )}
      <form onSubmit={submit} aria-describedby="login-note">
        <label for="username">User name</label>
        <input id="username" name="username" autocomplete="username" required value={username} onInput={(e) => setUsername((e.target as HTMLInputElement).value)} />
        <label for="password">Password</label>
        <input id="password" name="password" type="password" autocomplete="current-password" required value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
      </form>
      <p class="muted" id="login-note">
        The session lives in this tab only: reloading or closing it signs you out.
      </p>
    </main>
  );
}

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

const decode = (s: string) => decodeURIComponent(s);

function Page(props: { hash: string; admin: boolean }) {
  const parts = props.hash.replace(/^#\/?/, '').split('/');
  const [first = 'fleet', second, third] = parts;
  if (first === 'robots' && second) return <RobotPage name={decode(second)} />;
  if (first === 'keystores' && second && third === 'enclaves') return <EnclavePage ks={decode(second)} path={`/${parts.slice(3).map(decode).join('/')}`} />;
  if (first === 'keystores' && second) return <KeystorePage ks={decode(second)} />;
  if (first === 'keystores') return <KeystoresPage />;
  if (first === 'expiry') return <ExpiryPage />;
  if (first === 'access' && props.admin) return <AccessPage />;
  if (first === 'audit' && props.admin) return <AuditPage />;
  if (first === 'fleet' || first === '') return <FleetPage />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        There is no such page. <a href="#/fleet">Back to the fleet</a>.
      </p>
    </section>
  );
}

function App() {
  const [session, setSession] = useState<Session | null>(currentSession());
  const [message, setMessage] = useState('');
  const hash = useHash();
  useEffect(() => {
    whenSessionEnds((m) => {
      setMessage(m);
      setSession(null);
    });
  }, []);
  useEffect(() => {
    document.title = `Enclave server console`;
    document.getElementById('main')?.focus();
  }, [hash]);
  if (!session) return <LoginForm message={message} onLogin={(s) => (setMessage(''), setSession(s))} />;
  const admin = session.role === 'admin';
  const section = hash.replace(/^#\/?/, '').split('/')[0] || 'fleet';
  const links: [string, string][] = [
    ['fleet', 'Fleet'],
    ['keystores', 'Keystores'],
    ['expiry', 'Expiry horizon'],
    ...(admin ? ([['access', 'Access'], ['audit', 'Audit']] as [string, string][]) : []),
  ];
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById('main')?.focus())}>
        Skip to content
      </a>
      <header>
        <nav aria-label="Console">
          <ul>
            {links.map(([id, text]) => (
              <li key={id}>
                <a href={`#/${id}`} aria-current={section === id || (id === 'fleet' && section === 'robots') ? 'page' : undefined}>
                  {text}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <p class="who">
          {session.name} ({session.role}){' '}
          <button type="button" onClick={logout}>
            Sign out
          </button>
        </p>
      </header>
      <main id="main" tabIndex={-1}>
        <Page hash={hash} admin={admin} />
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);

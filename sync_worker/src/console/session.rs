// Console sessions: in memory, keyed by a random id the browser holds in an HMAC-signed
// cookie; each keeps the person's own database connection until it expires or ends.
use super::person::RoleKind;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The session cookie's name. The key that signs it is made at start: restarting the
/// worker signs everyone out.
pub const COOKIE: &str = "pg_sync_console";

pub struct Session {
    pub role: String,
    pub kind: RoleKind,
    pub db: Arc<Client>,
    pub csrf: String,
    started: Instant,
    last_used: Instant,
}

/// Sessions one role may hold at once; signing in again ends its least recently used.
pub const SESSIONS_PER_ROLE: usize = 5;

struct Store {
    key: Vec<u8>,
    idle: Duration,
    lifetime: Duration,
    max: usize,
    map: Mutex<HashMap<String, Session>>,
}

#[derive(Clone)]
pub struct Sessions(Arc<Store>);

/// `n` random bytes from the system's CSPRNG.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        // OpenSSL's generator failed (it never does once seeded): fall back on rand's,
        // a CSPRNG seeded from the OS too.
        bytes.iter_mut().for_each(|b| *b = rand::random());
    }
    bytes
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    hex::encode(random_bytes(n))
}

impl Sessions {
    pub fn new(idle: Duration, lifetime: Duration, max: usize) -> Sessions {
        Sessions(Arc::new(Store {
            key: random_bytes(32),
            idle,
            lifetime,
            max,
            map: Mutex::new(HashMap::new()),
        }))
    }

    fn mac(&self, what: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0.key).expect("HMAC takes a key of any length");
        mac.update(what.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// `value.signature`, for a cookie.
    pub fn sign(&self, value: &str) -> String {
        format!("{value}.{}", self.mac(value))
    }

    /// The value of a signed cookie, if its signature is ours.
    pub fn verify(&self, signed: &str) -> Option<String> {
        let (value, sig) = signed.rsplit_once('.')?;
        let want = self.mac(value);
        let mac_ok = {
            use hmac::digest::Digest;
            // Compare digests: no early exit on the first differing byte.
            Sha256::digest(want.as_bytes()) == Sha256::digest(sig.as_bytes())
        };
        mac_ok.then(|| value.to_string())
    }

    /// The token a sign-in form carries, bound to the browser's pre-session cookie.
    pub fn signin_token(&self, pre: &str) -> String {
        self.mac(&format!("signin:{pre}"))
    }

    /// May `role` start a session now? Each session holds a database connection, so
    /// their number is bounded: a role at SESSIONS_PER_ROLE will give up its least
    /// recently used one (in `create`); otherwise the console must not be full. Asked
    /// before connecting, so that a full console opens no connection.
    pub fn room_for(&self, role: &str) -> bool {
        let map = self.lock();
        let now = Instant::now();
        let live = map.values().filter(|s| self.alive(s, now));
        let (mine, all) = live.fold((0, 0), |(m, a), s| (m + usize::from(s.role == role), a + 1));
        mine >= SESSIONS_PER_ROLE || all < self.0.max
    }

    /// Start a session; its id goes into the cookie. Ends the role's least recently used
    /// session when it already has SESSIONS_PER_ROLE, and expired ones at once.
    pub fn create(&self, role: String, kind: RoleKind, db: Client) -> String {
        let id = random_hex(32);
        let now = Instant::now();
        {
            let mut map = self.lock();
            map.retain(|_, s| self.alive(s, now));
            let mut mine: Vec<(Instant, String)> = map
                .iter()
                .filter(|(_, s)| s.role == role)
                .map(|(k, s)| (s.last_used, k.clone()))
                .collect();
            mine.sort();
            let over = (mine.len() + 1).saturating_sub(SESSIONS_PER_ROLE);
            for (_, k) in mine.into_iter().take(over) {
                map.remove(&k);
            }
        }
        let session = Session {
            role,
            kind,
            db: Arc::new(db),
            csrf: random_hex(32),
            started: now,
            last_used: now,
        };
        self.lock().insert(id.clone(), session);
        id
    }

    /// The live session `id`, marked used now. An expired one is ended.
    pub fn touch(&self, id: &str) -> Option<(String, RoleKind, Arc<Client>, String)> {
        let mut map = self.lock();
        let now = Instant::now();
        let alive = map.get(id).map(|s| self.alive(s, now))?;
        if !alive {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_used = now;
        Some((s.role.clone(), s.kind, s.db.clone(), s.csrf.clone()))
    }

    /// The CSRF token of session `id` (not marking it used).
    pub fn csrf_of(&self, id: &str) -> Option<String> {
        let map = self.lock();
        let s = map.get(id)?;
        self.alive(s, Instant::now()).then(|| s.csrf.clone())
    }

    /// Sign out: the session and its connection end.
    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) < self.0.idle
            && now.duration_since(s.started) < self.0.lifetime
            && !s.db.is_closed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map usable.
        self.0.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// End expired sessions every second, closing their connections (dropping the last
    /// `Client` closes it; a request still using one keeps it until it finishes).
    pub fn spawn_sweeper(&self) {
        let weak: Weak<Store> = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(store) = weak.upgrade() else { return };
                let me = Sessions(store);
                let now = Instant::now();
                let ended: Vec<Session> = {
                    let mut map = me.lock();
                    let dead: Vec<String> = map
                        .iter()
                        .filter(|(_, s)| !me.alive(s, now))
                        .map(|(k, _)| k.clone())
                        .collect();
                    dead.iter().filter_map(|k| map.remove(k)).collect()
                };
                for s in ended {
                    tracing::info!("console: session of `{}` expired", s.role);
                }
            }
        });
    }
}

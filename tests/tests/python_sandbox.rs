// Restricted execution: task code and common code cannot reach a secret value — not by
// name, not by introspection (__globals__, __class__.__subclasses__(), frames, gc,
// sys.modules, imports, getattr/format tricks), not through the objects core code and
// evaluation-context providers hand out, not through SQL. Legitimate Python still works.
use pg_sync_tests::python::PyProject;
use serde_json::{json, Value};

const TOKEN: &str = "s3cr3t-API-VALUE";
const KEY: &str = "k3y-EXAMPLE-VALUE";

const CORE: &str = r#"
import hashlib
_token = secrets.API_TOKEN

def auth_header():
    return {"X-Sig": hashlib.sha256(secrets.API_TOKEN.encode()).hexdigest()}

class Client:
    def __init__(self):
        self._token = secrets.API_TOKEN
    def call(self):
        return len(self._token)

client = Client()

def tokens():
    local_secret = secrets.API_TOKEN
    yield len(local_secret)

def with_callback(fn):
    token = secrets.API_TOKEN
    return fn(len(token))

LEAKED_MODULE = hashlib
"#;

async fn project() -> PyProject {
    let p = PyProject::new("sandbox").await;
    p.sql(&format!(
        "INSERT INTO sync.project_secret (project_id, key, value) VALUES
           ({id}, 'API_TOKEN', '{TOKEN}'), ({id}, 'EXAMPLE_KEY', '{KEY}');
         UPDATE sync.project SET eval_context = '{{example}}' WHERE id = {id};",
        id = p.id
    ))
    .await;
    p.set("core_code", CORE).await;
    p
}

fn assert_no_secret(report: &Value, code: &str) {
    let text = report.to_string();
    assert!(
        !text.contains(TOKEN) && !text.contains(KEY),
        "secret leaked by:\n{code}\n{report}"
    );
}

/// Each snippet is the body of handle_cron; `refusal` must appear in the job's error.
const ATTACKS: &[(&str, &str)] = &[
    ("return secrets.API_TOKEN", "NameError"),
    ("return MAGIC.secrets.API_TOKEN", "MAGIC has no 'secrets'"),
    ("return _token", "NameError"),
    ("return auth_header.__globals__['secrets'].API_TOKEN", "not allowed"),
    ("return getattr(auth_header, '__globals__')['_token']", "private attribute"),
    ("return client._token", "private attribute '_token'"),
    ("return getattr(client, '_token')", "private attribute '_token'"),
    ("return vars(client)", "NameError"),
    ("return '{0._token}'.format(client)", "private attribute '_token'"),
    ("return '{0.call.__self__._token}'.format(client)", "private attribute"),
    ("return str.format('{0._token}', client)", "private attribute '_token'"),
    ("return '{c._token}'.format_map({'c': client})", "private attribute '_token'"),
    ("f = getattr('{0._token}', 'format')\n    return f(client)", "private attribute '_token'"),
    ("return f'{client._token}'", "private attribute '_token'"),
    ("g = tokens()\n    next(g)\n    return g.gi_frame.f_locals['local_secret']", "is not allowed"),
    ("g = tokens()\n    next(g)\n    return getattr(getattr(g, 'gi_frame'), 'f_locals')", "'gi_frame' is not allowed"),
    ("return ().__class__.__bases__[0].__subclasses__()", "not allowed"),
    ("return type(client)", "NameError"),
    ("import gc\n    return gc.get_objects()", "import is not allowed"),
    ("from sys import modules\n    return modules", "import is not allowed"),
    ("return __import__('gc')", "not allowed"),
    ("return __builtins__", "not allowed"),
    ("return eval('secrets')", "NameError"),
    ("return compile('1', 'x', 'exec')", "NameError"),
    ("return open('/proc/self/environ').read()", "NameError"),
    ("return example_sign.__closure__[0].cell_contents", "not allowed"),
    ("try:\n        1 / 0\n    except Exception as e:\n        return e.__traceback__.tb_frame.f_back.f_globals", "not allowed"),
    ("try:\n        1 / 0\n    except Exception as e:\n        tb = getattr(e, 'with_traceback')\n        return getattr(tb, 'tb_frame')", "'tb_frame' is not allowed"),
    ("return with_callback(lambda n: n)", ""),
    ("return client.call()", ""),
    ("return auth_header()['X-Sig'] != ''", ""),
    ("return example_sign('payload')", ""),
    ("return LEAKED_MODULE.sha256", "NameError"),
    ("return json.codecs.sys.modules", "json.codecs is not available"),
    ("return datetime.sys", "datetime.sys is not available"),
    ("return dateutil.parser.parse.__globals__", "not allowed"),
    ("return getattr(log, '__globals__')", "private attribute"),
    ("return env._models", "private attribute"),
    ("return params._values", "private attribute"),
    ("match client:\n        case Client(_token=t):\n            return t", "private attribute '_token'"),
    ("UserError.args = 1", "setting or deleting attributes is not allowed"),
    ("setattr(client, 'x', 1)", "NameError"),
    ("class X:\n        pass", "class definitions are not allowed"),
    ("return str(client.call.__func__)", "not allowed"),
    ("return [c for c in client.call.__code__.co_consts]", "not allowed"),
    ("return getattr(getattr(client, 'call'), 'mro')", "'mro' is not allowed"),
    ("return db.query('SELECT value FROM sync.project_secret')", "permission denied"),
    ("db.execute('SET ROLE postgres')\n    return db.query('SELECT value FROM sync.project_secret')", "may not run SET ROLE"),
    ("db.execute('RESET ROLE')\n    return db.query('SELECT value FROM sync.project_secret')", "may not run RESET"),
    ("db.query(\"SELECT set_config('role', 'none', false)\")\n    return db.query('SELECT value FROM sync.project_secret')", "changed the database role"),
    ("try:\n        db.query(\"SELECT set_config('role', 'none', true)\")\n    except Exception:\n        pass\n    return db.query('SELECT value FROM sync.project_secret')", "changed the database role"),
    ("db.execute('COMMIT')", "may not run transaction control"),
    ("db.query(\"SELECT set_config('session_authorization', 'postgres', true)\")\n    return db.query('SELECT value FROM sync.project_secret')", "permission denied"),
    ("db.execute(\"DO $$ BEGIN PERFORM set_config('role', 'postgres', true); RAISE EXCEPTION '%', (SELECT string_agg(value, ',') FROM sync.project_secret); END $$\")", "may not run DO blocks"),
    ("db.execute(\"CREATE FUNCTION leak() RETURNS text LANGUAGE plpgsql AS $$ BEGIN PERFORM set_config('role', 'postgres', true); RETURN 'x'; END $$\")", "may not run CREATE FUNCTION"),
];

#[tokio::test]
async fn task_code_cannot_reach_secret_values() {
    let p = project().await;
    for (body, refusal) in ATTACKS {
        let code = format!("def handle_cron():\n    {body}\n");
        let report = p.run_code(&code, "handle_cron", Value::Null).await;
        assert_no_secret(&report, &code);
        if refusal.is_empty() {
            assert_eq!(report["state"], "done", "{code}\n{report}");
        } else {
            let err = report["error"].as_str().unwrap_or_default();
            assert_eq!(report["state"], "failed", "not refused:\n{code}\n{report}");
            assert!(
                err.contains(refusal),
                "{code}\nexpected {refusal:?} in:\n{err}"
            );
        }
    }
}

#[tokio::test]
async fn common_code_cannot_reach_secrets_either() {
    let p = project().await;
    for (common, refusal) in [
        ("T = secrets.API_TOKEN", "NameError"),
        ("T = auth_header.__globals__", "not allowed"),
        ("import os", "import is not allowed"),
        ("T = client._token", "private attribute"),
    ] {
        p.set("common_code", common).await;
        let report = p
            .run_code(
                "def handle_cron():\n    return T\n",
                "handle_cron",
                Value::Null,
            )
            .await;
        assert_no_secret(&report, common);
        assert_eq!(report["state"], "failed", "{common}: {report}");
        let err = report["error"].as_str().unwrap_or_default();
        assert!(err.contains(refusal), "{common}: {err}");
        assert!(err.contains("<common_code>"), "{err}");
    }
}

#[tokio::test]
async fn providers_and_core_code_see_secrets_and_pass_on_helpers() {
    let p = project().await;
    // The example provider signs with EXAMPLE_KEY; core code reads API_TOKEN.
    let result = p
        .result(
            "def handle_cron():\n    return [example_sign('abc'), client.call(), with_callback(lambda n: n * 2)]\n",
            "handle_cron",
        )
        .await;
    let expected = result[0].as_str().unwrap_or_default().to_string();
    assert_eq!(expected.len(), 64, "{result}");
    assert_eq!(result[1], json!(TOKEN.len()));
    assert_eq!(result[2], json!(TOKEN.len() * 2));
    // The signature depends on the secret: another key gives another signature.
    p.sql(&format!(
        "UPDATE sync.project_secret SET value = 'other' WHERE project_id = {} AND key = 'EXAMPLE_KEY'",
        p.id
    ))
    .await;
    let again = p
        .result(
            "def handle_cron():\n    return example_sign('abc')\n",
            "handle_cron",
        )
        .await;
    assert_ne!(again.as_str(), Some(expected.as_str()));
    // Core code's modules and private names are not passed on.
    let err = p
        .error("def handle_cron():\n    return hashlib\n", "handle_cron")
        .await;
    assert!(err.contains("NameError"), "{err}");
}

#[tokio::test]
async fn unknown_provider_fails_with_a_clear_message() {
    let p = project().await;
    p.sql(&format!(
        "UPDATE sync.project SET eval_context = '{{nope}}' WHERE id = {}",
        p.id
    ))
    .await;
    let err = p
        .error("def handle_cron():\n    pass\n", "handle_cron")
        .await;
    assert!(err.contains("no provider 'nope'"), "{err}");
}

#[tokio::test]
async fn operator_providers_are_found_in_the_search_path() {
    let mut p = project().await;
    let dir = std::env::temp_dir().join(format!("pg_sync_providers_{}", p.db.name));
    std::fs::create_dir_all(&dir).expect("provider dir");
    std::fs::write(
        dir.join("shop.py"),
        "def eval_context(secrets, context):\n    n = len(secrets.API_TOKEN)\n    return {'token_length': lambda: n, '_hidden': 1}\n",
    )
    .expect("write provider");
    p.worker_env("SYNC_WORKER_EVAL_CONTEXT_PATH", &dir.to_string_lossy());
    p.sql(&format!(
        "UPDATE sync.project SET eval_context = '{{example,shop}}' WHERE id = {}",
        p.id
    ))
    .await;
    let result = p
        .result(
            "def handle_cron():\n    return [token_length(), len(example_sign('x'))]\n",
            "handle_cron",
        )
        .await;
    assert_eq!(result, json!([TOKEN.len(), 64]));
    let err = p
        .error("def handle_cron():\n    return _hidden\n", "handle_cron")
        .await;
    assert!(err.contains("NameError"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn restricted_code_still_runs_ordinary_python() {
    let p = project().await;
    p.set(
        "common_code",
        "def total(items):\n    return sum(i['n'] for i in items)\nRATE = 2\n",
    )
    .await;
    let code = r#"
COUNT = 0

def bump():
    global COUNT
    COUNT += 1
    return COUNT

def squares(n):
    for i in range(n):
        yield i * i

def handle_cron():
    data = [{'n': 1}, {'n': 2}]
    out = {
        'format': '{} and {name}'.format(1, name='x'),
        'format_attr': '{0.year}'.format(datetime.date(2024, 5, 1)),
        'format_map': '{a}'.format_map({'a': 5}),
        'str_format': str.format('{}-{}', 1, 2),
        'fstring': f"{RATE * 2:03d}",
        'getattr': getattr(datetime.date(2024, 5, 1), 'month'),
        'getattr_default': getattr(client, 'missing', 'd'),
        'hasattr': [hasattr(client, 'call'), hasattr(client, '_token')],
        'total': total(data),
        'gen': list(squares(4)),
        'lambda': sorted([3, 1, 2], key=lambda x: -x),
        'global': [bump(), bump()],
        'dict': {k: v for k, v in zip('ab', range(2))},
        'percent': '%s-%d' % ('a', 3),
    }
    try:
        {}['missing']
    except KeyError as e:
        out['except'] = 'KeyError'
    match out['total']:
        case 3:
            out['match'] = True
    return out
"#;
    let result = p.result(code, "handle_cron").await;
    assert_eq!(
        result,
        json!({
            "format": "1 and x",
            "format_attr": "2024",
            "format_map": "5",
            "str_format": "1-2",
            "fstring": "004",
            "getattr": 5,
            "getattr_default": "d",
            "hasattr": [true, false],
            "total": 3,
            "gen": [0, 1, 4, 9],
            "lambda": [3, 2, 1],
            "global": [1, 2],
            "dict": {"a": 0, "b": 1},
            "percent": "a-3",
            "except": "KeyError",
            "match": true,
        })
    );
}

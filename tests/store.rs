//! The `Store` contract, on a real SQLite file and a real PostgreSQL database: the same
//! assertions for both.

mod common;

use common::{Backend, TestDb};
use hlsgate::store::{self, Session, Store, StoreError};
use std::sync::Arc;

fn run<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn open(db: &TestDb) -> Arc<dyn Store> {
    store::open(&db.url).await.unwrap()
}

fn session(id: u8, user_id: i64, created_at: i64, expires_at: i64) -> Session {
    Session {
        id: store::session_hex(&[id; 16]),
        user_id,
        created_at,
        expires_at,
        ip: "192.0.2.1".into(),
        user_agent: "test".into(),
    }
}

fn users_are_unique_and_survive_reopening(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path());
    run(async {
        let s = open(&db).await;
        assert_eq!(
            s.backend(),
            match backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            }
        );
        let a = s.create_user("alice", "h1", 1).await.unwrap();
        let b = s.create_user("bob", "h2", 2).await.unwrap();
        assert_ne!(a.id, b.id);
        assert!(matches!(
            s.create_user("alice", "other", 3).await,
            Err(StoreError::Conflict)
        ));
        // The failed insert changed nothing.
        assert_eq!(
            s.user_by_name("alice")
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            "h1"
        );
        assert_eq!(s.user_by_name("carol").await.unwrap(), None);
        drop(s);
        // Migrations run again on an existing store and keep every row.
        let s = open(&db).await;
        assert_eq!(s.user_by_name("bob").await.unwrap(), Some(b));
    });
}

fn streams_belong_to_their_user(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path());
    run(async {
        let s = open(&db).await;
        let a = s.create_user("alice", "h", 0).await.unwrap().id;
        let b = s.create_user("bob", "h", 0).await.unwrap().id;
        let x = s
            .create_stream(a, "http://o/live", "index.m3u8", 10)
            .await
            .unwrap();
        assert_eq!(x.url(), "http://o/live/index.m3u8");
        assert_eq!(s.streams(a).await.unwrap(), vec![x.clone()]);
        assert!(s.streams(b).await.unwrap().is_empty());
        // Bob can neither read, change nor delete Alice's stream.
        assert_eq!(s.user_stream(b, x.id).await.unwrap(), None);
        assert_eq!(
            s.update_stream(b, x.id, "http://evil", "x.m3u8", 11)
                .await
                .unwrap(),
            None
        );
        assert!(!s.delete_stream(b, x.id).await.unwrap());
        assert_eq!(s.stream(x.id).await.unwrap(), Some(x.clone()));
        // Alice can.
        let y = s
            .update_stream(a, x.id, "http://o/other", "main.m3u8", 12)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (y.id, y.url().as_str(), y.updated_at),
            (x.id, "http://o/other/main.m3u8", 12)
        );
        assert!(s.delete_stream(a, x.id).await.unwrap());
        assert_eq!(s.stream(x.id).await.unwrap(), None);
        // Ids are never reused: old playback tokens name them.
        let z = s.create_stream(b, "http://o", "i.m3u8", 13).await.unwrap();
        assert!(z.id > x.id, "{} reused", z.id);
    });
}

fn sessions_expire_and_the_cap_evicts_the_oldest(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(backend, dir.path());
    run(async {
        let s = open(&db).await;
        let a = s.create_user("alice", "h", 0).await.unwrap().id;
        let b = s.create_user("bob", "h", 0).await.unwrap().id;
        assert!(s
            .create_session(&session(1, a, 100, 10_000), 2)
            .await
            .unwrap()
            .is_empty());
        assert!(s
            .create_session(&session(2, a, 200, 10_000), 2)
            .await
            .unwrap()
            .is_empty());
        assert!(s
            .create_session(&session(9, b, 250, 10_000), 2)
            .await
            .unwrap()
            .is_empty());
        // A third session for Alice ends her oldest one, not Bob's.
        let evicted = s
            .create_session(&session(3, a, 300, 10_000), 2)
            .await
            .unwrap();
        assert_eq!(evicted, vec![store::session_hex(&[1; 16])]);
        let ids: Vec<String> = s
            .sessions(a, 400)
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(
            ids,
            vec![store::session_hex(&[3; 16]), store::session_hex(&[2; 16])]
        );
        assert_eq!(s.sessions(b, 400).await.unwrap().len(), 1);
        // No cap: nothing evicted.
        assert!(s
            .create_session(&session(4, a, 500, 10_000), 0)
            .await
            .unwrap()
            .is_empty());

        let two = store::session_hex(&[2; 16]);
        assert!(s.session(&two, 600).await.unwrap().is_some());
        assert!(s.session(&two, 10_000).await.unwrap().is_none(), "expired");
        // Only the owner ends a session.
        assert!(!s.delete_session(b, &two).await.unwrap());
        assert!(s.session(&two, 600).await.unwrap().is_some());
        assert!(s.delete_session(a, &two).await.unwrap());
        assert!(s.session(&two, 600).await.unwrap().is_none());
        assert!(!s.delete_session(a, &two).await.unwrap());
    });
}

crate::both!(
    users_are_unique_and_survive_reopening,
    streams_belong_to_their_user,
    sessions_expire_and_the_cap_evicts_the_oldest,
);

//! Concurrent commits of one key by several instances over a real S3-compatible server: the
//! pointer swap is conditional, so every race leaves one live entry and no orphaned body.
//! Needs the server of `scripts/s3-server.sh` (see `tests/object_store.rs`).
#![cfg(feature = "aws")]

mod object_store_support;

use std::sync::Arc;

use bytes::Bytes;
use daramjwee::Metadata;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use object_store_support::{body, engine};

/// The server must honour `If-None-Match: *` and `If-Match` on PUT, or the race test below
/// would pass by luck: this pins what the commit protocol relies on.
#[tokio::test]
async fn server_honours_conditional_puts() {
    let s3 = require_s3!("conditional");
    let os = s3.store().object_store().clone();
    let path = Path::from(format!("{}/probe", s3.prefix));
    let create = || PutOptions::from(PutMode::Create);
    let first = os
        .put_opts(&path, PutPayload::from_static(b"a"), create())
        .await
        .expect("create on an absent object");
    let again = os
        .put_opts(&path, PutPayload::from_static(b"b"), create())
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let update = |v: UpdateVersion| PutOptions::from(PutMode::Update(v));
    let second = os
        .put_opts(
            &path,
            PutPayload::from_static(b"c"),
            update(first.clone().into()),
        )
        .await
        .expect("update against the current version");
    let stale = os
        .put_opts(&path, PutPayload::from_static(b"d"), update(first.into()))
        .await;
    assert!(
        matches!(stale, Err(object_store::Error::Precondition { .. })),
        "{stale:?}"
    );
    assert_ne!(second.e_tag, None);
    let now = os.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(
        now,
        Bytes::from_static(b"c"),
        "the failed updates wrote nothing"
    );
}

/// Two engines (each with its own client, as two processes would have) commit the same key at
/// the same moment, many times: afterwards the bucket holds one pointer naming one body, and
/// that body is whole.
#[tokio::test]
async fn two_engines_racing_on_one_key_leave_no_orphaned_body() {
    let s3 = require_s3!("race");
    let engines = [engine(s3.store()), engine(s3.store())];
    const ROUNDS: u8 = 25;
    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(engines.len()));
        let tasks = engines.iter().enumerate().map(|(i, e)| {
            let (e, barrier) = (e.clone(), barrier.clone());
            let data = body(2000 + i, round.wrapping_mul(2).wrapping_add(i as u8));
            tokio::spawn(async move {
                let meta =
                    Metadata::new(http::StatusCode::OK).with_content_length(data.len() as u64);
                let mut w = e.set("k", meta).await.expect("set");
                w.write(data).await.expect("write");
                barrier.wait().await;
                w.commit().await.expect("commit");
            })
        });
        for t in tasks.collect::<Vec<_>>() {
            t.await.unwrap();
        }
    }
    let store = s3.store();
    let objs = s3.objects(&store).await;
    let bodies: Vec<_> = objs.iter().filter(|p| p.ends_with(".body")).collect();
    let pointers: Vec<_> = objs.iter().filter(|p| p.ends_with(".meta")).collect();
    assert_eq!(pointers.len(), 1, "{objs:?}");
    assert_eq!(bodies.len(), 1, "no body without a pointer: {objs:?}");
    // The one body is the one the pointer names, whole: one of the last round's two bodies.
    let e = daramjwee::store::Store::get(&store, "k")
        .await
        .unwrap()
        .expect("entry");
    let got = e.body.collect().await.unwrap();
    let last = ROUNDS - 1;
    let candidates = [
        body(2000, last.wrapping_mul(2)),
        body(2001, last.wrapping_mul(2) + 1),
    ];
    assert!(candidates.contains(&got), "a body of the last round, whole");
}

/// A backend without conditional writes (S3 with `aws_conditional_put=disabled`): commits fall
/// back to overwrites and still serve whole, current bodies; shared purges refuse to publish
/// rather than risk two purges taking one log number.
#[tokio::test]
async fn without_conditional_writes_commits_overwrite_and_shared_purges_refuse() {
    let s3 = require_s3!("unconditional");
    let store =
        daramjwee::store::BucketStore::from_url(&format!("s3://{}/{}", s3.bucket, s3.prefix))
            .unwrap()
            .option("aws_conditional_put", "disabled")
            .build()
            .unwrap();
    for (i, len) in [100, 200].into_iter().enumerate() {
        let meta = Metadata::new(http::StatusCode::OK).with_content_length(len as u64);
        let mut w = daramjwee::store::Store::put(&store, "k", meta)
            .await
            .unwrap();
        w.write(body(len, i as u8)).await.unwrap();
        w.commit().await.unwrap();
    }
    let e = daramjwee::store::Store::get(&store, "k")
        .await
        .unwrap()
        .expect("entry");
    assert!(
        e.body.collect().await.unwrap() == body(200, 1),
        "the last write wins, whole"
    );
    let objs = s3.objects(&store).await;
    assert_eq!(
        objs.iter().filter(|p| p.ends_with(".body")).count(),
        1,
        "{objs:?}"
    );

    let cache = engine(store.clone());
    let shared = daramjwee::store::SharedPurges::builder(cache, store);
    let shared = shared
        .start()
        .await
        .expect("reading the log needs no condition");
    let published = shared.purge_key("k").await;
    assert!(
        matches!(published, Err(daramjwee::store::PurgeError::Log { .. })),
        "{published:?}"
    );
}

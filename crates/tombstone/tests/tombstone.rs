//! The tombstone contract, on sled (`kv`).
#![allow(clippy::unwrap_used, reason = "a test: a failed expectation panics")]

mod kv {
    use chrono::{TimeZone, Utc};
    use tombstone::{
        Error, FORMAT_VERSION, KvDb, KvOptions, META_TREE, Mark, MigrationSource, Status,
        TOMBSTONED_FORMAT, mark, status,
    };

    fn sample_mark(target: &str) -> Mark {
        Mark {
            marked_at: Utc.with_ymd_and_hms(2026, 11, 21, 6, 30, 0).unwrap(),
            nodestore_version: "0.1.0".into(),
            target: target.into(),
            target_identity: Some([7; 16]),
        }
    }

    /// sled itself, as an older binary would open it; sled releases its file
    /// lock shortly after the last handle drops, so this waits for it.
    fn raw_open(path: &std::path::Path) -> sled::Db {
        (0..250)
            .find_map(|_| {
                sled::open(path)
                    .inspect_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("sled opens once the other handles are gone")
    }

    fn live_db_with_data(path: &std::path::Path) {
        let db = KvDb::open(path, &KvOptions::default()).unwrap();
        db.tree("accounts").unwrap().insert(b"k", b"v").unwrap();
        db.flush().unwrap();
    }

    /// A database sled 0.34.7 panics on when it opens it: a log of a few
    /// segments with no snapshot (so every open recovers all of it), 4 KiB
    /// zeroed where its recovery is left with a page without state
    /// (docs/sled-format.md §5), found by the reader, which says so.
    fn a_database_sled_panics_on(path: &std::path::Path) {
        let work = path.with_extension("whole");
        {
            let db = raw_open(&work);
            let t = db.open_tree("accounts").unwrap();
            for round in 0..4u32 {
                for i in 0..2500u32 {
                    t.insert(i.to_be_bytes(), vec![(round + i) as u8; 300])
                        .unwrap();
                }
                db.flush().unwrap();
            }
        }
        drop(raw_open(&work).flush());
        let len = std::fs::metadata(work.join("db")).unwrap().len();
        for tenth in 1..20u64 {
            let _ = std::fs::remove_dir_all(path);
            std::fs::create_dir_all(path).unwrap();
            for e in std::fs::read_dir(&work).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file()
                    && !e.file_name().to_string_lossy().starts_with("snap.")
                {
                    std::fs::copy(e.path(), path.join(e.file_name())).unwrap();
                }
            }
            std::fs::create_dir_all(path.join("blobs")).unwrap();
            {
                use std::os::unix::fs::FileExt as _;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path.join("db"))
                    .unwrap();
                f.write_all_at(&[0; 4096], len * tenth / 20).unwrap();
            }
            if let Err(sled_reader::Error::Damaged(d)) = sled_reader::Db::open(path)
                && d.reason.contains("panics on opening")
            {
                return;
            }
        }
        panic!("no place in the log where sled panics");
    }

    /// sled panics opening some damaged logs; a node's open and the mark
    /// return that as an error naming the database, never as a panic.
    #[test]
    fn sleds_panic_on_a_damaged_log_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        a_database_sled_panics_on(&path);
        let copy = dir.path().join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        for e in std::fs::read_dir(&path).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
            }
        }
        for (what, result) in [
            ("open", KvDb::open(&path, &KvOptions::default()).map(|_| ())),
            ("mark", mark(&copy, &sample_mark("sqlite:/x"))),
        ] {
            match result {
                Err(e @ Error::SledPanicked { .. }) => {
                    let shown = e.to_string();
                    assert!(
                        shown.contains("tried to serialize Uninitialized"),
                        "{shown}"
                    );
                    assert!(shown.contains(&dir.path().display().to_string()), "{shown}");
                }
                other => panic!("{what}: expected SledPanicked, got {other:?}"),
            }
        }
    }

    /// A snapshot sled did not finish writing (it was killed between
    /// writing `snap.*.generating` and renaming it) would make sled refuse
    /// the database: a writer's open removes it, and the data is all there.
    #[test]
    fn a_writer_opens_past_a_snapshot_sled_did_not_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        live_db_with_data(&path);
        let stale = path.join("snap.FFFFFFFFFFFFFFF0.generating");
        std::fs::write(&stale, b"cut short").unwrap();
        assert!(
            sled::Config::new().path(&path).open().is_err(),
            "sled alone refuses it"
        );
        let db = (0..250)
            .find_map(|_| {
                KvDb::open(&path, &KvOptions::default())
                    .inspect_err(|_| std::thread::sleep(std::time::Duration::from_millis(20)))
                    .ok()
            })
            .expect("the writer opens it");
        assert!(!stale.exists(), "the unfinished snapshot is gone");
        assert_eq!(
            db.tree("accounts")
                .unwrap()
                .get(b"k")
                .unwrap()
                .unwrap()
                .as_ref(),
            b"v"
        );
    }

    /// A write that names a tree position it did not open is an error
    /// naming the position, never a panic, and nothing of it lands.
    #[test]
    fn a_write_to_a_tree_it_did_not_open_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = KvDb::open(dir.path().join("kv"), &KvOptions::default()).unwrap();
        let tree = db.tree("accounts").unwrap();
        for t in [1usize, 7] {
            let err = db
                .write::<(), Error>(&[&tree], |w| {
                    w.insert(0, b"first", b"v")?;
                    w.insert(t, b"k", b"v")?;
                    Ok(())
                })
                .map_err(tombstone::transaction_error)
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("no tree at position {t} of a write over 1 trees")),
                "{err}"
            );
            assert!(
                db.write::<(), Error>(&[&tree], |w| {
                    w.remove(t, b"k")?;
                    Ok(())
                })
                .is_err()
            );
        }
        assert!(
            tree.get(b"first").unwrap().is_none(),
            "the write rolled back"
        );
    }

    /// A handle opened before the mark takes no write after it (an online
    /// migration's node holds the database open across its tombstone,
    /// docs/design.md §7.4): the write is refused as retired, and nothing of
    /// it lands.
    #[test]
    fn a_handle_opened_before_the_mark_takes_no_write_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        let db = KvDb::open(&path, &KvOptions::default()).unwrap();
        let other = db.clone();
        let tree = other.tree("accounts").unwrap();
        let write = |value: &'static [u8]| {
            other
                .write::<(), Error>(&[&tree], |w| {
                    w.insert(0, b"k", value)?;
                    Ok(())
                })
                .map_err(tombstone::transaction_error)
        };
        write(b"before").unwrap();
        db.mark(&sample_mark("sqlite:/node.db")).unwrap();
        let refused = write(b"after").unwrap_err();
        assert!(matches!(refused, Error::Tombstoned { .. }), "{refused}");
        assert_eq!(tree.get(b"k").unwrap().unwrap().as_ref(), b"before");
    }

    #[test]
    fn a_new_database_is_live_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        assert_eq!(status(&path).unwrap(), None);
        live_db_with_data(&path);
        assert_eq!(status(&path).unwrap(), Some(Status::Live(FORMAT_VERSION)));
        let db = KvDb::open(&path, &KvOptions::default()).unwrap();
        assert_eq!(
            db.tree("accounts")
                .unwrap()
                .get(b"k")
                .unwrap()
                .unwrap()
                .as_ref(),
            b"v"
        );
        db.check().unwrap();
    }

    #[test]
    fn a_tombstoned_database_is_refused_naming_path_date_and_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        live_db_with_data(&path);
        mark(&path, &sample_mark("sqlite:/data/node.db")).unwrap();
        let err = KvDb::open(&path, &KvOptions::default()).unwrap_err();
        match &err {
            Error::Tombstoned { path: p, mark } => {
                assert_eq!(p, &path);
                assert_eq!(mark, &sample_mark("sqlite:/data/node.db"));
            }
            other => panic!("expected Tombstoned, got {other:?}"),
        }
        let msg = err.to_string();
        for needle in [
            path.to_str().unwrap(),
            "2026-11-21T06:30:00.000000Z",
            "sqlite:/data/node.db",
            "0.1.0",
        ] {
            assert!(msg.contains(needle), "{msg} should name {needle}");
        }
    }

    #[test]
    fn marking_twice_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        live_db_with_data(&path);
        mark(&path, &sample_mark("sqlite:/a.db")).unwrap();
        mark(&path, &sample_mark("sqlite:/a.db")).unwrap();
        assert_eq!(
            status(&path).unwrap(),
            Some(Status::Tombstoned(sample_mark("sqlite:/a.db")))
        );
        // A later re-run into a rebuilt database records its own target.
        mark(&path, &sample_mark("postgres://node@db/nodestore")).unwrap();
        assert!(matches!(
            KvDb::open(&path, &KvOptions::default()),
            Err(Error::Tombstoned { mark, .. }) if mark.target == "postgres://node@db/nodestore"
        ));
    }

    /// A binary from before tombstones existed checks only that the format
    /// is the one it knows; the mark changes it, so such a binary refuses too.
    #[test]
    fn the_mark_changes_the_format_so_older_binaries_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        live_db_with_data(&path);
        mark(&path, &sample_mark("sqlite:/a.db")).unwrap();
        let raw = raw_open(&path);
        let format = raw
            .open_tree(META_TREE)
            .unwrap()
            .get(b"format")
            .unwrap()
            .unwrap();
        let format = u32::from_be_bytes(format.as_ref().try_into().unwrap());
        assert_eq!(format, TOMBSTONED_FORMAT);
        assert_ne!(
            format, FORMAT_VERSION,
            "an older binary reading format 1 only would refuse it"
        );
    }

    #[test]
    fn an_unknown_format_is_refused_for_use_and_for_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        live_db_with_data(&path);
        {
            let raw = raw_open(&path);
            raw.open_tree(META_TREE)
                .unwrap()
                .insert(b"format", &7u32.to_be_bytes())
                .unwrap();
            raw.flush().unwrap();
        }
        assert!(matches!(
            KvDb::open(&path, &KvOptions::default()),
            Err(Error::UnsupportedFormat { found: 7, .. })
        ));
        assert!(matches!(
            MigrationSource::open(&path, &KvOptions::default()),
            Err(Error::UnsupportedFormat { found: 7, .. })
        ));
    }

    #[test]
    fn the_migrator_still_reads_a_tombstoned_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        live_db_with_data(&path);
        mark(&path, &sample_mark("sqlite:/a.db")).unwrap();
        let src = MigrationSource::open(&path, &KvOptions::default()).unwrap();
        assert!(matches!(src.status(), Status::Tombstoned(_)));
        let tree = src.tree("accounts").unwrap().unwrap();
        assert_eq!(tree.get(b"k").unwrap().unwrap(), b"v");
        assert_eq!(tree.iter().count(), 1);
        // Reading a store that never wrote creates nothing.
        assert!(src.tree("sessions").unwrap().is_none());
        drop((tree, src));
        let raw = raw_open(&path);
        assert!(!raw.tree_names().iter().any(|n| n.as_ref() == b"sessions"));
    }

    /// sled lets go of its file lock a moment after the last handle drops;
    /// opening right after closing must still work.
    #[test]
    fn closing_and_reopening_at_once_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        for i in 0..20u32 {
            let db = KvDb::open(&path, &KvOptions::default()).unwrap();
            db.tree("t")
                .unwrap()
                .insert(i.to_be_bytes(), &[1u8][..])
                .unwrap();
            db.flush().unwrap();
        }
        mark(&path, &sample_mark("sqlite:/a.db")).unwrap();
        let src = MigrationSource::open(&path, &KvOptions::default()).unwrap();
        assert_eq!(src.tree("t").unwrap().unwrap().len(), 20);
    }

    #[test]
    fn nothing_is_created_where_no_database_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        assert!(matches!(
            mark(&path, &sample_mark("x")),
            Err(Error::Missing(_))
        ));
        assert!(matches!(
            MigrationSource::open(&path, &KvOptions::default()),
            Err(Error::Missing(_))
        ));
        assert!(!path.exists());
    }

    /// A format 1 database kept no statistics to check the reader against,
    /// so the migration reads it with sled too, on a copy, and compares: the
    /// two agree, and the database's files are not touched.
    #[test]
    fn a_format_1_database_is_read_by_both_readers_and_they_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv");
        {
            let db = raw_open(&path);
            let meta = db.open_tree(META_TREE).unwrap();
            meta.insert(b"format", &1u32.to_be_bytes()).unwrap();
            meta.insert(b"identity", &[9u8; 16]).unwrap();
            let t = db.open_tree("accounts").unwrap();
            for i in 0..3000u32 {
                t.insert(
                    i.to_be_bytes(),
                    vec![(i % 251) as u8; 40 + (i % 90) as usize],
                )
                .unwrap();
            }
            db.flush().unwrap();
        }
        let src = MigrationSource::open(&path, &KvOptions::default()).unwrap();
        assert_eq!(src.status(), &Status::Live(tombstone::FORMAT_V1));
        assert!(src.recorded_stats().unwrap().is_none());
        let files = |p: &std::path::Path| -> Vec<(String, Vec<u8>)> {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_type().unwrap().is_file())
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        let before = files(&path);
        assert_eq!(src.cross_check_with_sled().unwrap(), Vec::<String>::new());
        assert_eq!(files(&path), before, "the cross-check reads a copy");
    }
}

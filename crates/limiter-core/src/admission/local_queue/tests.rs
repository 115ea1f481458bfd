use super::*;

fn caps(global: u32, user: u32) -> LocalCaps {
    LocalCaps {
        global,
        user,
        queue: 10_000,
        user_queue: 10_000,
    }
}

#[test]
fn shares_never_drop_below_one() {
    let fleet = LocalCaps {
        global: 20,
        user: 2,
        queue: 500,
        user_queue: 10,
    };
    assert_eq!(
        fleet.share(3),
        LocalCaps {
            global: 6,
            user: 1,
            queue: 166,
            user_queue: 3,
        }
    );
    assert_eq!(caps(2, 1).share(8).global, 1);
    assert_eq!(fleet.share(0).global, 20);
}

fn enqueue(st: &mut State, user: &[u8], class: usize) -> oneshot::Receiver<Option<Arc<LocalSlot>>> {
    st.seq += 1;
    let (tx, rx) = oneshot::channel();
    let id = format!("w{}", st.seq);
    st.users.entry(user.to_vec()).or_default().waiting.insert(
        (class, st.seq),
        Entry {
            user_key: String::new(),
            id,
            tx,
        },
    );
    st.queued += 1;
    st.refresh(user);
    rx
}

/// A user at its cap with many waiters is not in the ready set at all: a slot that frees goes
/// to the first waiter of a user with room, by class then arrival.
#[test]
fn users_at_their_cap_are_set_aside() {
    let mut st = State {
        caps: Some(caps(2, 1)),
        ..State::default()
    };
    let a = st.take(b"a", "", "a1");
    let c = st.take(b"c", "", "c1");
    let mut blocked: Vec<_> = (0..1000).map(|_| enqueue(&mut st, b"a", 0)).collect();
    let mut low = enqueue(&mut st, b"b", 1);
    let mut high = enqueue(&mut st, b"d", 0);
    assert_eq!(st.ready.len(), 2, "only b and d are ready");
    st.give_back(&c);
    st.dispatch();
    assert!(matches!(high.try_recv(), Ok(Some(_))), "d: higher class");
    assert!(low.try_recv().is_err());
    st.give_back(&a);
    st.dispatch();
    // a's first waiter (class 0) goes before b's (class 1).
    assert!(matches!(blocked[0].try_recv(), Ok(Some(_))));
    assert!(low.try_recv().is_err());
    assert!(blocked[1].try_recv().is_err());
    assert_eq!(st.queued, 1000);
}

/// Cut off under safety: a local grant only reuses a slot Redis still counts for the same
/// user, never one of another user's, and never more than were counted.
#[test]
fn cut_off_a_grant_only_reuses_a_counted_slot_of_its_user() {
    let mut st = State::default();
    st.shared_taken("s1", "ka");
    st.shared_taken("s2", "ka");
    st.shared_taken("s3", "kb");
    assert_eq!(st.begin_counted(), 3);
    let c = caps(6, 2);
    let class = Class::new(0);
    let queued = |r| match r {
        Ok(Admitted::Queued(_, rx)) => rx,
        _ => panic!("expected to queue"),
    };
    let now = |r| matches!(r, Ok(Admitted::Now(_)));
    // Everything counted is running: nobody has room.
    let mut a = queued(st.admit(c, b"a", "ka", "a1", class));
    let mut z = queued(st.admit(c, b"z", "kz", "z1", class));
    // b's request ends: its room goes to b alone.
    st.shared_returned("s3");
    assert!(z.try_recv().is_err(), "z took b's counted slot");
    assert!(now(st.admit(c, b"b", "kb", "b1", class)));
    let _b = queued(st.admit(c, b"b", "kb", "b2", class));
    // One of a's ends: a's waiter gets it, z still nothing.
    st.shared_returned("s1");
    assert!(
        matches!(a.try_recv(), Ok(Some(_))),
        "a's waiter took a's room"
    );
    assert!(z.try_recv().is_err());
    assert_eq!(st.by_key.get("ka"), Some(&2));
    // Shared admission back: the counted slots no longer bind.
    st.set_degraded(false);
    assert!(st.counted.is_none());
    assert!(matches!(z.try_recv(), Ok(Some(_))) || now(st.admit(c, b"z", "kz", "z2", class)));
}

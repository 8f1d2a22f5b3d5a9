//! Scoped worker pools: the one way this crate runs a job over many items
//! on several threads. Each worker keeps its own state (a decoder, an
//! encoder, a reusable buffer), items are taken from one shared queue so a
//! slow item never holds up the others' share, and the first error stops
//! every worker from starting another item. A panic in a worker reaches the
//! caller once the others have stopped, as `std::thread::scope` does.
//!
//! The queue may be any iterator, including a channel's receiving end, so a
//! producer on another thread can feed a pool; when the pool returns, the
//! queue is dropped with it and the producer's next send fails instead of
//! waiting on a queue nobody drains.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;

/// Runs `work` on every item of `items` with `threads` workers (the calling
/// thread is one of them; with one, everything runs on it), each with its
/// own state made by `init`. After the first error no worker starts
/// another item, and that error is returned once all have stopped.
pub fn for_each<T, S, E>(
    threads: usize,
    items: impl IntoIterator<Item = T, IntoIter: Send>,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, T) -> Result<(), E> + Sync,
) -> Result<(), E>
where
    T: Send,
    E: Send,
{
    let mut items = items.into_iter();
    if threads <= 1 {
        let mut state = init();
        return items.try_for_each(|item| work(&mut state, item));
    }
    let queue = Mutex::new(items);
    let failure: Mutex<Option<E>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let worker = || {
        let mut state = init();
        while !stop.load(Ordering::Relaxed) {
            let Some(item) = queue.lock().expect("work queue").next() else {
                return;
            };
            if let Err(e) = work(&mut state, item) {
                stop.store(true, Ordering::Relaxed);
                failure.lock().expect("failure slot").get_or_insert(e);
                return;
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        worker();
    });
    failure.into_inner().expect("failure slot").map_or(Ok(()), Err)
}

/// Runs `work` on every item of `items` with `threads` workers, each with
/// its own state made by `init`, and hands each result to `consume` on the
/// calling thread as it arrives (not in input order); at most `threads`
/// results wait for it. With one worker, everything runs on the calling
/// thread, item by item. The first error `consume` returns stops the
/// workers from starting another item and is returned; results still in
/// flight are dropped.
pub fn map_consume<T, S, U, E>(
    threads: usize,
    items: impl IntoIterator<Item = T, IntoIter: Send>,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, T) -> U + Sync,
    mut consume: impl FnMut(U) -> Result<(), E>,
) -> Result<(), E>
where
    T: Send,
    U: Send,
{
    let mut items = items.into_iter();
    if threads <= 1 {
        let mut state = init();
        return items.try_for_each(|item| consume(work(&mut state, item)));
    }
    let queue = Mutex::new(items);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(threads);
        for _ in 0..threads {
            let (tx, queue, stop, init, work) = (tx.clone(), &queue, &stop, &init, &work);
            scope.spawn(move || {
                let mut state = init();
                while !stop.load(Ordering::Relaxed) {
                    let Some(item) = queue.lock().expect("work queue").next() else {
                        return;
                    };
                    // The consumer has stopped and dropped its end.
                    if tx.send(work(&mut state, item)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let outcome = rx.iter().try_for_each(&mut consume);
        if outcome.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // Dropping the receiving end here wakes a worker blocked on a full
        // channel, before the scope waits for the workers.
        drop(rx);
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn for_each_visits_every_item_once() {
        for threads in [1, 3, 8] {
            let seen = Mutex::new(Vec::new());
            for_each::<_, _, ()>(
                threads,
                0..100,
                || (),
                |_, i| {
                    seen.lock().unwrap().push(i);
                    Ok(())
                },
            )
            .unwrap();
            let mut seen = seen.into_inner().unwrap();
            seen.sort_unstable();
            assert_eq!(seen, (0..100).collect::<Vec<_>>());
        }
    }

    #[test]
    fn for_each_keeps_state_per_worker() {
        let states = AtomicUsize::new(0);
        let init = || states.fetch_add(1, Ordering::Relaxed);
        for_each::<_, _, ()>(4, 0..50, init, |_, _| Ok(())).unwrap();
        assert_eq!(states.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn for_each_stops_at_the_first_error() {
        for threads in [1, 4] {
            let started = AtomicUsize::new(0);
            let outcome = for_each(
                threads,
                0..10_000,
                || (),
                |_, i| {
                    started.fetch_add(1, Ordering::Relaxed);
                    if i == 10 {
                        return Err(format!("item {i}"));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    Ok(())
                },
            );
            assert_eq!(outcome, Err("item 10".to_string()));
            // The others finish the items they hold, and no more.
            assert!(started.load(Ordering::Relaxed) < 100);
        }
    }

    #[test]
    fn for_each_with_no_items_or_more_workers_than_items() {
        let calls = AtomicUsize::new(0);
        for_each::<usize, _, ()>(
            4,
            [],
            || (),
            |_, _| {
                calls.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        for_each::<_, _, ()>(
            16,
            0..3,
            || (),
            |_, _| {
                calls.fetch_add(1, Ordering::Relaxed);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    #[should_panic]
    fn for_each_passes_a_panic_on() {
        let _ = for_each::<_, _, ()>(
            4,
            0..100,
            || (),
            |_, i| {
                assert!(i != 50, "worker panics");
                Ok(())
            },
        );
    }

    #[test]
    fn for_each_drains_a_channel_and_unblocks_its_producer_on_error() {
        let (tx, rx) = sync_channel::<usize>(1);
        std::thread::scope(|scope| {
            let producer = scope.spawn(move || (0..1000).take_while(|&i| tx.send(i).is_ok()).count());
            let outcome = for_each(3, rx, || (), |_, i| if i == 5 { Err(i) } else { Ok(()) });
            assert_eq!(outcome, Err(5));
            assert!(producer.join().unwrap() < 1000);
        });
    }

    #[test]
    fn map_consume_hands_every_result_to_the_caller() {
        for threads in [1, 2, 8] {
            let caller = std::thread::current().id();
            let mut got = Vec::new();
            map_consume::<_, _, _, ()>(
                threads,
                0..100u64,
                || 0u64,
                |_, i| i * 2,
                |v| {
                    assert_eq!(std::thread::current().id(), caller);
                    got.push(v);
                    Ok(())
                },
            )
            .unwrap();
            got.sort_unstable();
            assert_eq!(got, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn map_consume_in_input_order_with_one_worker() {
        let mut got = Vec::new();
        map_consume::<_, _, _, ()>(
            1,
            0..20,
            || (),
            |_, i| i,
            |v| {
                got.push(v);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn map_consume_stops_at_the_consumers_first_error() {
        let worked = AtomicUsize::new(0);
        let outcome = map_consume(
            4,
            0..100_000,
            || (),
            |_, i| {
                worked.fetch_add(1, Ordering::Relaxed);
                i
            },
            |_| Err("full disk"),
        );
        assert_eq!(outcome, Err("full disk"));
        // One result consumed, at most a channel's worth waiting, one let in
        // before the stop, and one being made per worker.
        assert!(worked.load(Ordering::Relaxed) <= 2 + 4 + 4);
    }

    #[test]
    fn map_consume_with_no_items_or_more_workers_than_items() {
        let mut n = 0;
        map_consume::<usize, _, _, ()>(
            4,
            [],
            || (),
            |_, i| i,
            |_| {
                n += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, 0);
        map_consume::<_, _, _, ()>(
            32,
            0..2,
            || (),
            |_, i| i,
            |_| {
                n += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    #[should_panic]
    fn map_consume_passes_a_panic_on() {
        let _ = map_consume::<_, _, _, ()>(
            4,
            0..100,
            || (),
            |_, i| {
                assert!(i != 50, "worker panics");
                i
            },
            |_| Ok(()),
        );
    }
}

//! One seed is one run: the same seed gives the same trace fingerprint,
//! event count and end time; other seeds give other runs; threads do not
//! matter; and switching one fault class off leaves the rest of the plan.

use pslite_sim::{FaultClass, FaultClasses, Outcome, Setup, Sim, SwarmOptions};

const SEEDS: [u64; 6] = [0, 1, 7, 0x5eed, 0xdead_beef, u64::MAX];

fn run(seed: u64, options: SwarmOptions) -> Outcome {
    Sim::new(Setup::swarm(seed, options)).run()
}

fn key(outcome: &Outcome) -> (u64, u64, u64, bool) {
    (outcome.fingerprint, outcome.events, outcome.virtual_time.as_nanos(), outcome.passed())
}

#[test]
fn the_same_seed_gives_the_same_run() {
    // Every fault class on, so lost and duplicated frames (and the failures
    // they cause) must replay too.
    for faults in [FaultClasses::DEFAULT, FaultClasses::ALL] {
        let options = SwarmOptions { lite: true, faults, strict: false, resend: None };
        for seed in SEEDS {
            let (a, b) = (run(seed, options), run(seed, options));
            assert_eq!(key(&a), key(&b), "seed {seed:#x} with {faults:?}");
            assert_eq!(a.failure, b.failure, "seed {seed:#x} with {faults:?}");
        }
    }
}

#[test]
fn different_seeds_give_different_runs() {
    let options = SwarmOptions { lite: true, ..SwarmOptions::default() };
    let mut fingerprints: Vec<u64> = SEEDS.iter().map(|&seed| run(seed, options).fingerprint).collect();
    fingerprints.sort_unstable();
    fingerprints.dedup();
    assert_eq!(fingerprints.len(), SEEDS.len());
}

#[test]
fn results_do_not_depend_on_threads() {
    let options = SwarmOptions { lite: true, ..SwarmOptions::default() };
    let alone: Vec<_> = SEEDS.iter().map(|&seed| key(&run(seed, options))).collect();
    let together: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = SEEDS.iter().map(|&seed| scope.spawn(move || key(&run(seed, options)))).collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).collect()
    });
    assert_eq!(alone, together);
}

#[test]
fn switching_a_class_off_leaves_the_rest_of_the_plan() {
    for seed in SEEDS {
        let all =
            Setup::swarm(seed, SwarmOptions { lite: false, faults: FaultClasses::ALL, strict: false, resend: None });
        for class in FaultClass::ALL {
            let without = Setup::swarm(
                seed,
                SwarmOptions { lite: false, faults: FaultClasses::ALL.without(class), strict: false, resend: None },
            );
            assert_eq!(without.plan, all.plan.without(class), "seed {seed:#x} without {class:?}");
            assert_eq!((without.servers, without.workers), (all.servers, all.workers));
            assert_eq!(without.workload, all.workload);
        }
    }
}

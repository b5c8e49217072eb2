//! One seed is one run: the same seed gives the same trace fingerprint,
//! event count and end time; other seeds give other runs; threads do not
//! matter; switching one fault class off leaves the rest of the plan; and
//! forcing the value mode changes the values and nothing else.

use pslite_sim::{FaultClass, FaultClasses, Outcome, Setup, Sim, SwarmOptions, ValueMode};

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
    // they cause) must replay too; and fractions, whose sums round.
    for faults in [FaultClasses::DEFAULT, FaultClasses::ALL] {
        for values in [None, Some(ValueMode::Fractions)] {
            let options = SwarmOptions { lite: true, faults, values, ..SwarmOptions::default() };
            for seed in SEEDS {
                let (a, b) = (run(seed, options), run(seed, options));
                assert_eq!(key(&a), key(&b), "seed {seed:#x} with {faults:?} and {values:?}");
                assert_eq!(a.failure, b.failure, "seed {seed:#x} with {faults:?} and {values:?}");
            }
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
        let all = Setup::swarm(seed, SwarmOptions { faults: FaultClasses::ALL, ..SwarmOptions::default() });
        for class in FaultClass::ALL {
            let without = Setup::swarm(
                seed,
                SwarmOptions { faults: FaultClasses::ALL.without(class), ..SwarmOptions::default() },
            );
            assert_eq!(without.plan, all.plan.without(class), "seed {seed:#x} without {class:?}");
            assert_eq!((without.servers, without.workers), (all.servers, all.workers));
            assert_eq!(without.workload, all.workload);
        }
    }
}

#[test]
fn forcing_the_value_mode_changes_the_values_and_nothing_else() {
    let mut drawn_modes = Vec::new();
    for seed in 0..40 {
        let drawn = Setup::swarm(seed, SwarmOptions { lite: true, ..SwarmOptions::default() });
        drawn_modes.push(drawn.values);
        for mode in ValueMode::ALL {
            let forced = Setup::swarm(seed, SwarmOptions { lite: true, values: Some(mode), ..SwarmOptions::default() });
            assert_eq!(forced.values, mode);
            assert_eq!(forced.plan, drawn.plan, "seed {seed:#x} forced to {mode}");
            assert_eq!(
                (forced.servers, forced.workers, forced.replicas),
                (drawn.servers, drawn.workers, drawn.replicas)
            );
            assert_eq!(forced.workload.keys, drawn.workload.keys);
            let shape = |s: &Setup| s.workload.scripts.iter().map(|s| (s.ops.len(), s.window)).collect::<Vec<_>>();
            assert_eq!(shape(&forced), shape(&drawn), "seed {seed:#x} forced to {mode}");
            if mode == drawn.values {
                assert_eq!(forced.workload, drawn.workload);
            }
        }
    }
    assert!(drawn_modes.contains(&ValueMode::Integers) && drawn_modes.contains(&ValueMode::Fractions));
    // Forcing the mode a seed draws anyway is the same run.
    for seed in SEEDS {
        let drawn = Setup::swarm(seed, SwarmOptions { lite: true, ..SwarmOptions::default() }).values;
        let forced = SwarmOptions { lite: true, values: Some(drawn), ..SwarmOptions::default() };
        let options = SwarmOptions { lite: true, ..SwarmOptions::default() };
        assert_eq!(key(&run(seed, forced)), key(&run(seed, options)), "seed {seed:#x}");
    }
}

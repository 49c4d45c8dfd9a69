//! Feasibility filters: one small check per [`Constraint`], in one chain ([`CHAIN`]) that
//! every workload kind runs in `problem::compile` and that `stratus carbon shift` runs on its
//! sites, so a rule is written once and means the same thing everywhere.
//!
//! A filter sees what a unit asks of one option ([`Ask`]) and what that option offers
//! ([`Site`]), and says [`Verdict::Fit`] or rejects with the numbers that decided it
//! ([`Reject`]: requested against available), as the Kubernetes scheduler's filter plugins
//! do. The chain runs in `Constraint` declaration order and stops at the first rejection,
//! so the last constraint that removed options is the one the surviving options ran into.

use crate::problem::Constraint;
use stratus_model::workload::residency_allows;
use stratus_model::Accelerator;

/// What a unit asks of one option. Sizes (nodes, watts, hours) depend on the option's node
/// shape and speed, so an `Ask` is built per (unit, option) pair.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Accelerators the workload runs on.
    pub accelerators: &'a [Accelerator],
    /// Jurisdictions the workload may run in (empty: anywhere).
    pub residency: &'a [String],
    /// Whether spot capacity is acceptable.
    pub spot: bool,
    /// Chips that must share one interconnect domain (a one-domain gang), if any.
    pub one_domain_chips: Option<u32>,
    /// Nodes the unit needs on this option.
    pub nodes: u32,
    /// Facility watts it draws there, counted against the region's power cap.
    pub watts: f64,
    /// Hours it needs to finish on this option's accelerator (0 for services).
    pub run_hours: f64,
    /// Hours it has before its deadline, if it has one.
    pub deadline_hours: Option<f64>,
    /// The most it will pay per chip-hour, if it has a ceiling.
    pub max_usd_per_chip_hour: Option<f64>,
    /// Round-trip time its users tolerate, if it serves users.
    pub latency_slo_ms: Option<f64>,
}

/// What one option offers a unit.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The pool's accelerator.
    pub accelerator: Accelerator,
    /// Jurisdictions of the pool's region.
    pub jurisdictions: &'a [String],
    /// Whether the nodes are spot.
    pub spot: bool,
    /// Chips in one interconnect domain of the pool.
    pub domain_chips: u32,
    /// Nodes this option can give the unit (a blend's on-demand nodes included).
    pub nodes: u32,
    /// The region's power cap, facility watts.
    pub cap_watts: f64,
    /// The highest price per chip-hour of any node the unit would get (each node of a
    /// committed-plus-on-demand blend is held to a ceiling, the on-demand ones included).
    pub usd_per_chip_hour: f64,
    /// Round-trip time from the unit's users to the region, ms (0 when it has none).
    pub rtt_ms: f64,
}

/// Why a filter said no: the quantity the unit needs (or would pay, or would wait) on this
/// option against what the option (or the workload's own ceiling) allows, in the
/// constraint's unit. Categorical constraints (accelerator, residency, spot) record 1 against 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reject {
    /// The constraint that failed.
    pub constraint: Constraint,
    /// What the unit would need: chips in one domain, nodes, watts, hours, $/chip-h, ms.
    pub requested: f64,
    /// What is allowed: domain chips, nodes in the pool, the cap's watts, hours to the
    /// deadline, the maximum $/chip-h, the SLO's ms.
    pub available: f64,
}

impl Reject {
    /// A categorical rejection (1 requested, 0 available), e.g. for options skipped by lookup.
    pub fn categorical(constraint: Constraint) -> Reject {
        Reject {
            constraint,
            requested: 1.0,
            available: 0.0,
        }
    }

    /// How far the option is from passing: requested / available (∞ for categorical misses).
    /// The smallest over a unit's options is its closest miss.
    pub fn shortfall(&self) -> f64 {
        if self.available > 0.0 {
            self.requested / self.available
        } else {
            f64::INFINITY
        }
    }

    /// The numbers in words, e.g. "needs 64 nodes, at most 32 available"; empty for
    /// categorical constraints, whose name says it all.
    pub fn detail(&self) -> String {
        let (r, a) = (self.requested, self.available);
        match self.constraint {
            Constraint::InterconnectDomain => {
                format!("needs {r:.0} chips in one domain, at most {a:.0}")
            }
            Constraint::PoolSize => format!("needs {r:.0} nodes, at most {a:.0} available"),
            Constraint::PowerCap => format!("needs {}, region cap {}", power(r), power(a)),
            Constraint::Deadline => format!("needs {r:.1} h, {a:.1} h to the deadline"),
            Constraint::MaxPrice => format!("pays {r:.3} $/chip-h, maximum {a:.3}"),
            Constraint::LatencySlo if r.is_infinite() => {
                format!("no RTT known from the users' location, SLO {a:.0} ms")
            }
            Constraint::LatencySlo => format!("{r:.0} ms RTT, SLO {a:.0} ms"),
            _ => String::new(),
        }
    }
}

/// Facility watts in words, with the precision a near miss needs: kW under a megawatt.
fn power(w: f64) -> String {
    if w < 1e6 {
        format!("{:.1} kW", w / 1e3)
    } else {
        format!("{:.3} MW", w / 1e6)
    }
}

/// A filter's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The option passes.
    Fit,
    /// The option is ruled out, and why.
    Reject(Reject),
}

/// One filter: the check behind one constraint.
pub type Filter = fn(&Ask, &Site) -> Verdict;

fn when(fits: bool, constraint: Constraint, requested: f64, available: f64) -> Verdict {
    if fits {
        Verdict::Fit
    } else {
        Verdict::Reject(Reject {
            constraint,
            requested,
            available,
        })
    }
}

fn category(fits: bool, constraint: Constraint) -> Verdict {
    if fits {
        Verdict::Fit
    } else {
        Verdict::Reject(Reject::categorical(constraint))
    }
}

fn accelerator(a: &Ask, s: &Site) -> Verdict {
    category(
        a.accelerators.contains(&s.accelerator),
        Constraint::Accelerator,
    )
}

fn residency(a: &Ask, s: &Site) -> Verdict {
    category(
        residency_allows(a.residency, s.jurisdictions),
        Constraint::Residency,
    )
}

fn spot(a: &Ask, s: &Site) -> Verdict {
    category(a.spot || !s.spot, Constraint::Spot)
}

fn interconnect_domain(a: &Ask, s: &Site) -> Verdict {
    match a.one_domain_chips {
        Some(c) => when(
            c <= s.domain_chips,
            Constraint::InterconnectDomain,
            c as f64,
            s.domain_chips as f64,
        ),
        None => Verdict::Fit,
    }
}

fn pool_size(a: &Ask, s: &Site) -> Verdict {
    when(
        a.nodes <= s.nodes,
        Constraint::PoolSize,
        a.nodes as f64,
        s.nodes as f64,
    )
}

fn power_cap(a: &Ask, s: &Site) -> Verdict {
    when(
        a.watts <= s.cap_watts,
        Constraint::PowerCap,
        a.watts,
        s.cap_watts,
    )
}

fn deadline(a: &Ask, _: &Site) -> Verdict {
    match a.deadline_hours {
        Some(d) => when(a.run_hours <= d, Constraint::Deadline, a.run_hours, d),
        None => Verdict::Fit,
    }
}

fn latency_slo(a: &Ask, s: &Site) -> Verdict {
    match a.latency_slo_ms {
        Some(slo) => when(s.rtt_ms <= slo, Constraint::LatencySlo, s.rtt_ms, slo),
        None => Verdict::Fit,
    }
}

fn max_price(a: &Ask, s: &Site) -> Verdict {
    match a.max_usd_per_chip_hour {
        Some(m) => when(
            s.usd_per_chip_hour <= m,
            Constraint::MaxPrice,
            s.usd_per_chip_hour,
            m,
        ),
        None => Verdict::Fit,
    }
}

/// Every filter, in [`Constraint`] order (a test holds the order). Capacity and redundancy
/// are not here: they depend on the other placements, so the solver checks them.
pub const CHAIN: [(Constraint, Filter); 9] = [
    (Constraint::Accelerator, accelerator),
    (Constraint::Residency, residency),
    (Constraint::Spot, spot),
    (Constraint::InterconnectDomain, interconnect_domain),
    (Constraint::PoolSize, pool_size),
    (Constraint::PowerCap, power_cap),
    (Constraint::Deadline, deadline),
    (Constraint::LatencySlo, latency_slo),
    (Constraint::MaxPrice, max_price),
];

/// Run the chain; the first rejection ends it.
pub fn check(ask: &Ask, site: &Site) -> Verdict {
    for (_, f) in CHAIN {
        if let v @ Verdict::Reject(_) = f(ask, site) {
            return v;
        }
    }
    Verdict::Fit
}

/// Options a unit lost to one constraint, and the one that came closest to passing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Excluded {
    /// Options ruled out by this constraint.
    pub options: u32,
    /// The nearest miss among them (smallest requested / available).
    pub closest: Reject,
}

/// Per constraint, the options it ruled out for one unit.
pub type Exclusions = std::collections::BTreeMap<Constraint, Excluded>;

/// Count `options` more rejections by `r`'s constraint, keeping the nearest miss (the
/// earlier one on ties, so the result depends only on option order).
pub fn exclude(ex: &mut Exclusions, r: Reject, options: u32) {
    ex.entry(r.constraint)
        .and_modify(|e| {
            e.options += options;
            if r.shortfall() < e.closest.shortfall() {
                e.closest = r;
            }
        })
        .or_insert(Excluded {
            options,
            closest: r,
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask() -> Ask<'static> {
        Ask {
            accelerators: &[Accelerator::H100],
            residency: &[],
            spot: false,
            one_domain_chips: None,
            nodes: 4,
            watts: 40_000.0,
            run_hours: 10.0,
            deadline_hours: None,
            max_usd_per_chip_hour: None,
            latency_slo_ms: None,
        }
    }

    fn site() -> Site<'static> {
        Site {
            accelerator: Accelerator::H100,
            jurisdictions: &[],
            spot: false,
            domain_chips: 64,
            nodes: 8,
            cap_watts: 1e6,
            usd_per_chip_hour: 2.0,
            rtt_ms: 0.0,
        }
    }

    #[test]
    fn chain_runs_in_constraint_order() {
        let order: Vec<Constraint> = CHAIN.iter().map(|(c, _)| *c).collect();
        let mut sorted = order.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(order, sorted, "in Constraint order, each once");
        let (a, s) = (ask(), site());
        assert_eq!(check(&a, &s), Verdict::Fit);
    }

    #[test]
    fn each_filter_names_itself_and_its_numbers() {
        let s = site();
        let cases: Vec<(Ask, Site, Constraint, f64, f64)> = vec![
            (
                Ask {
                    accelerators: &[Accelerator::H200],
                    ..ask()
                },
                s,
                Constraint::Accelerator,
                1.0,
                0.0,
            ),
            (ask(), Site { spot: true, ..s }, Constraint::Spot, 1.0, 0.0),
            (
                Ask {
                    one_domain_chips: Some(128),
                    ..ask()
                },
                s,
                Constraint::InterconnectDomain,
                128.0,
                64.0,
            ),
            (Ask { nodes: 9, ..ask() }, s, Constraint::PoolSize, 9.0, 8.0),
            (
                Ask {
                    watts: 2e6,
                    ..ask()
                },
                s,
                Constraint::PowerCap,
                2e6,
                1e6,
            ),
            (
                Ask {
                    deadline_hours: Some(5.0),
                    ..ask()
                },
                s,
                Constraint::Deadline,
                10.0,
                5.0,
            ),
            (
                Ask {
                    latency_slo_ms: Some(50.0),
                    ..ask()
                },
                Site { rtt_ms: 80.0, ..s },
                Constraint::LatencySlo,
                80.0,
                50.0,
            ),
            (
                Ask {
                    max_usd_per_chip_hour: Some(1.5),
                    ..ask()
                },
                s,
                Constraint::MaxPrice,
                2.0,
                1.5,
            ),
        ];
        for (a, s, c, r, av) in cases {
            let Verdict::Reject(rej) = check(&a, &s) else {
                panic!("{c:?} should reject");
            };
            assert_eq!(rej.constraint, c);
            assert_eq!((rej.requested, rej.available), (r, av), "{c:?}");
            // Each case breaks one rule: only the filter filed under it says no, so every
            // filter sits under the constraint it checks.
            for (label, f) in CHAIN {
                match f(&a, &s) {
                    Verdict::Reject(x) => assert_eq!((label, x.constraint), (c, c)),
                    Verdict::Fit => assert_ne!(label, c, "{c:?}'s filter passed"),
                }
            }
        }
        // At the limit exactly, every numeric filter passes.
        let a = Ask {
            nodes: 8,
            watts: 1e6,
            one_domain_chips: Some(64),
            deadline_hours: Some(10.0),
            max_usd_per_chip_hour: Some(2.0),
            ..ask()
        };
        assert_eq!(check(&a, &s), Verdict::Fit);
    }

    #[test]
    fn residency_rejects_outside_jurisdictions() {
        let eu = ["EU".to_string()];
        let us = ["US".to_string()];
        let a = Ask {
            residency: &eu,
            ..ask()
        };
        let s = Site {
            jurisdictions: &us,
            ..site()
        };
        assert!(matches!(
            check(&a, &s),
            Verdict::Reject(Reject {
                constraint: Constraint::Residency,
                ..
            })
        ));
    }

    #[test]
    fn excluded_keeps_the_nearest_miss() {
        let r = |req: f64, av: f64| Reject {
            constraint: Constraint::PoolSize,
            requested: req,
            available: av,
        };
        let mut ex = Exclusions::new();
        exclude(&mut ex, r(64.0, 8.0), 1);
        exclude(&mut ex, r(64.0, 32.0), 1);
        exclude(&mut ex, r(64.0, 16.0), 1);
        let e = ex[&Constraint::PoolSize];
        assert_eq!(e.options, 3);
        assert_eq!(e.closest, r(64.0, 32.0));
        assert_eq!(e.closest.detail(), "needs 64 nodes, at most 32 available");
        let p = Reject {
            constraint: Constraint::PowerCap,
            requested: 8_410.0,
            available: 8_160.0,
        };
        assert_eq!(p.detail(), "needs 8.4 kW, region cap 8.2 kW");
        let far = Reject {
            constraint: Constraint::LatencySlo,
            requested: f64::INFINITY,
            available: 50.0,
        };
        assert_eq!(
            far.detail(),
            "no RTT known from the users' location, SLO 50 ms"
        );
    }
}

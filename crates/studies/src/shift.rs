//! Carbon-aware shifting of deferrable batch jobs in time (hourly intensity series) and
//! space (regions), within their deadlines, against the carbon-agnostic choice (the cheapest
//! site, as soon as released).
//!
//! Accounting is location-based: a job's emissions are its energy in each hour times the
//! average grid intensity of its site in that hour. Each job runs uninterrupted at one site
//! (restarts cost checkpoints; splitting is left out). Jobs are taken in order of deadline and
//! each gets the best (site, start) with room left, by dollars plus the carbon price times its
//! tonnes: exact for one job, greedy across jobs that compete for capacity.

/// A place a job can run.
#[derive(Debug, Clone)]
pub struct Site {
    /// Name (a region id).
    pub name: String,
    /// Grid intensity per hour, gCO2e/kWh.
    pub intensity: Vec<f64>,
    /// Price per chip-hour, $.
    pub usd_per_chip_hour: f64,
    /// Facility power per chip (TDP × PUE), kW.
    pub kw_per_chip: f64,
    /// Chips free in every hour (`None`: unlimited).
    pub capacity_chips: Option<u32>,
}

/// A deferrable job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Name.
    pub name: String,
    /// Chips it runs on.
    pub chips: u32,
    /// First hour it may start.
    pub release: u32,
    /// Hour by which it must have finished.
    pub deadline: u32,
    /// Sites it may use (indices), with the hours it runs there (accelerators differ).
    pub sites: Vec<(usize, u32)>,
}

/// Where and when a job runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Placement {
    /// Site index.
    pub site: usize,
    /// Start hour.
    pub start: u32,
    /// Hours it runs.
    pub hours: u32,
    /// tCO2e.
    pub tonnes: f64,
    /// $.
    pub usd: f64,
}

/// Both choices for every job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shift {
    /// Carbon-agnostic: cheapest site, earliest start.
    pub agnostic: Vec<Option<Placement>>,
    /// Carbon-aware.
    pub aware: Vec<Option<Placement>>,
}

impl Shift {
    /// (tCO2e, $) summed over the jobs both placed.
    pub fn totals(&self) -> ((f64, f64), (f64, f64)) {
        let mut a = (0.0, 0.0);
        let mut w = (0.0, 0.0);
        for (x, y) in self.agnostic.iter().zip(&self.aware) {
            if let (Some(x), Some(y)) = (x, y) {
                a.0 += x.tonnes;
                a.1 += x.usd;
                w.0 += y.tonnes;
                w.1 += y.usd;
            }
        }
        (a, w)
    }
}

/// Emissions of `chips` at `site` for `hours` from `start`, tCO2e (`None` past the series).
#[cfg(test)]
fn tonnes(site: &Site, chips: u32, start: u32, hours: u32) -> Option<f64> {
    let end = (start + hours) as usize;
    let window = site.intensity.get(start as usize..end)?;
    let kwh_per_hour = site.kw_per_chip * chips as f64;
    Some(window.iter().sum::<f64>() * kwh_per_hour / 1e6)
}

/// Free chips per site and hour.
struct Room {
    free: Vec<Option<Vec<u32>>>,
}

impl Room {
    fn new(sites: &[Site]) -> Room {
        Room {
            free: sites
                .iter()
                .map(|s| s.capacity_chips.map(|c| vec![c; s.intensity.len()]))
                .collect(),
        }
    }
    fn fits(&self, site: usize, chips: u32, start: u32, hours: u32) -> bool {
        match &self.free[site] {
            None => true,
            Some(f) => f
                .get(start as usize..(start + hours) as usize)
                .is_some_and(|w| w.iter().all(|&c| c >= chips)),
        }
    }
    fn take(&mut self, site: usize, chips: u32, start: u32, hours: u32) {
        if let Some(f) = &mut self.free[site] {
            for c in &mut f[start as usize..(start + hours) as usize] {
                *c -= chips;
            }
        }
    }
}

/// Best (site, start) for one job under `score`, among those with room; ties go to the
/// earlier start, then the lower site index.
fn best(
    job: &Job,
    sites: &[Site],
    room: &Room,
    score: &dyn Fn(&Placement) -> f64,
) -> Option<Placement> {
    let mut out: Option<(f64, Placement)> = None;
    for &(s, hours) in &job.sites {
        if hours == 0 || job.deadline < job.release + hours {
            continue;
        }
        let site = &sites[s];
        let usd = site.usd_per_chip_hour * job.chips as f64 * hours as f64;
        // Sliding window over the hours: O(window) per site.
        let last = job.deadline - hours;
        let Some(mut sum) = site
            .intensity
            .get(job.release as usize..(job.release + hours) as usize)
            .map(|w| w.iter().sum::<f64>())
        else {
            continue;
        };
        let per_g = site.kw_per_chip * job.chips as f64 / 1e6;
        for start in job.release..=last {
            if start > job.release {
                let add = (start + hours - 1) as usize;
                let Some(&inc) = site.intensity.get(add) else {
                    break;
                };
                sum += inc - site.intensity[(start - 1) as usize];
            }
            if !room.fits(s, job.chips, start, hours) {
                continue;
            }
            let p = Placement {
                site: s,
                start,
                hours,
                tonnes: sum * per_g,
                usd,
            };
            let v = score(&p);
            if out.as_ref().is_none_or(|(b, _)| v < *b - 1e-12) {
                out = Some((v, p));
            }
        }
    }
    out.map(|(_, p)| p)
}

/// Place every job twice: carbon-agnostic and carbon-aware at `usd_per_tonne`.
pub fn shift(jobs: &[Job], sites: &[Site], usd_per_tonne: f64) -> Shift {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&j| (jobs[j].deadline, j));
    let run = |score: &dyn Fn(&Placement) -> f64| {
        let mut room = Room::new(sites);
        let mut out = vec![None; jobs.len()];
        for &j in &order {
            if let Some(p) = best(&jobs[j], sites, &room, score) {
                room.take(p.site, jobs[j].chips, p.start, p.hours);
                out[j] = Some(p);
            }
        }
        out
    };
    // Agnostic: dollars, then the earliest start (the lexicographic score keeps a later start
    // from ever winning on carbon).
    let agnostic = run(&|p: &Placement| p.usd * 1e6 + p.start as f64);
    let aware = run(&|p: &Placement| p.usd + usd_per_tonne * p.tonnes);
    Shift { agnostic, aware }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, intensity: Vec<f64>, price: f64) -> Site {
        Site {
            name: name.into(),
            intensity,
            usd_per_chip_hour: price,
            kw_per_chip: 1.0,
            capacity_chips: None,
        }
    }

    #[test]
    fn a_job_moves_to_the_cleanest_window_within_its_deadline() {
        // Site 0: 300 g/kWh except hours 10-13 at 100; site 1: a flat 250, and cheaper.
        let mut a = vec![300.0; 48];
        a[10..14].fill(100.0);
        let sites = [site("a", a, 2.0), site("b", vec![250.0; 48], 1.0)];
        let job = Job {
            name: "j".into(),
            chips: 10,
            release: 0,
            deadline: 24,
            sites: vec![(0, 4), (1, 4)],
        };
        let s = shift(std::slice::from_ref(&job), &sites, 10_000.0);
        // Agnostic: the cheaper site at once: 4 h × 10 kW × 250 g = 10 kg, $40.
        let ag = s.agnostic[0].clone().unwrap();
        assert_eq!((ag.site, ag.start), (1, 0));
        assert!((ag.tonnes - 0.010).abs() < 1e-12);
        assert_eq!(ag.usd, 40.0);
        // Aware at $10,000/t: site 0 at hour 10 emits 4 kg for $80: 80 + 40 = 120 < 40 + 100.
        // (Below $6,667/t the $40 premium outweighs the 6 kg saved.)
        let aw = s.aware[0].clone().unwrap();
        assert_eq!((aw.site, aw.start), (0, 10));
        assert!((aw.tonnes - 0.004).abs() < 1e-12);
        // A deadline before the clean window: the cheaper site stays best. With no carbon
        // price the aware choice is the agnostic one.
        let early = Job {
            deadline: 12,
            ..job.clone()
        };
        let s = shift(std::slice::from_ref(&early), &sites, 10_000.0);
        assert_eq!(s.aware[0].as_ref().unwrap().site, 1);
        let s = shift(std::slice::from_ref(&job), &sites, 5_000.0);
        assert_eq!(s.aware[0].as_ref().unwrap().site, 1);
        let s = shift(std::slice::from_ref(&job), &sites, 0.0);
        assert_eq!(s.aware, s.agnostic);
    }

    #[test]
    fn the_optimum_matches_brute_force_and_capacity_is_respected() {
        // Pseudo-random series; every (site, start) enumerated directly.
        let mut x = 7u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 500) as f64
        };
        let sites: Vec<Site> = (0..3)
            .map(|i| {
                site(
                    &format!("s{i}"),
                    (0..72).map(|_| next()).collect(),
                    1.0 + i as f64,
                )
            })
            .collect();
        let job = Job {
            name: "j".into(),
            chips: 3,
            release: 4,
            deadline: 60,
            sites: vec![(0, 5), (1, 5), (2, 5)],
        };
        let price = 200.0;
        let mut brute = f64::INFINITY;
        for s in &sites {
            for start in 4..=55 {
                let t = tonnes(s, 3, start, 5).unwrap();
                let usd = s.usd_per_chip_hour * 15.0;
                brute = brute.min(usd + price * t);
            }
        }
        let got = shift(std::slice::from_ref(&job), &sites, price).aware[0]
            .clone()
            .unwrap();
        assert!((got.usd + price * got.tonnes - brute).abs() < 1e-9);
        // Two jobs wanting one clean window of one site with room for one: the second goes
        // elsewhere or later, never over capacity.
        let mut a = vec![400.0; 24];
        a[5] = 10.0;
        let mut one = site("a", a, 1.0);
        one.capacity_chips = Some(4);
        let sites = [one, site("b", vec![400.0; 24], 1.0)];
        let j = |n: &str, d: u32| Job {
            name: n.into(),
            chips: 4,
            release: 0,
            deadline: d,
            sites: vec![(0, 1), (1, 1)],
        };
        let s = shift(&[j("x", 10), j("y", 12)], &sites, 1000.0);
        let (x, y) = (s.aware[0].clone().unwrap(), s.aware[1].clone().unwrap());
        assert_eq!((x.site, x.start), (0, 5), "the earlier deadline goes first");
        assert!(!(y.site == 0 && y.start == 5));
    }
}

//! Summaries and the table of goals with their verdicts.

/// Per form and route: medians over rounds.
#[derive(Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) rps: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) cpu: f64,
}

/// A goal's verdict. A run that cannot resolve a goal says so instead of passing or failing
/// it: a peer whose added CPU came out at or below zero gives a ratio no meaning, and a p99
/// whose slices mostly stalled measures the host, not the form.
pub(crate) enum Verdict {
    Pass,
    Fail,
    Unresolved(String),
}

pub(crate) struct Verdicts(pub(crate) Vec<(Verdict, String, String, String)>);

impl Verdicts {
    pub(crate) fn add(&mut self, pass: bool, goal: &str, measured: String, target: String) {
        let verdict = if pass { Verdict::Pass } else { Verdict::Fail };
        self.0.push((verdict, goal.to_owned(), measured, target));
    }

    /// A goal against a peer's added CPU, `ours ≤ target × peer`: no verdict when the peer's
    /// added CPU is not above zero.
    pub(crate) fn add_ratio(&mut self, goal: &str, ours: f64, peer: f64, target: f64) {
        let target_text = format!("≤ {target} ×");
        if peer <= 0.0 {
            let why = "the peer's added CPU is not above zero".to_owned();
            let measured = format!("{ours:.1} µs vs {peer:.1} µs");
            self.undecided(why, goal, measured, target_text);
        } else {
            let measured = format!("{ours:.1} µs vs {peer:.1} µs: {:.2} ×", ours / peer);
            self.add(ours <= target * peer, goal, measured, target_text);
        }
    }

    pub(crate) fn undecided(&mut self, why: String, goal: &str, measured: String, target: String) {
        self.0
            .push((Verdict::Unresolved(why), goal.to_owned(), measured, target));
    }

    pub(crate) fn print(&self) {
        println!("\n| goal | measured | target | verdict |");
        println!("|---|---|---|---|");
        for (verdict, goal, measured, target) in &self.0 {
            let verdict = match verdict {
                Verdict::Pass => "PASS".to_owned(),
                Verdict::Fail => "FAIL".to_owned(),
                Verdict::Unresolved(why) => format!("NO VERDICT: {why}"),
            };
            println!("| {goal} | {measured} | {target} | {verdict} |");
        }
    }
}

//! Medians over rounds, summaries and the table of goals with their verdicts.

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The medians of each half of the rounds' pairs.
pub(crate) fn median_pair(runs: &[(f64, f64)]) -> (f64, f64) {
    (
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
    )
}

/// Per form and route: medians over rounds.
#[derive(Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) rps: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) cpu: f64,
}

pub(crate) struct Verdicts(pub(crate) Vec<(bool, String, String, String)>);

impl Verdicts {
    pub(crate) fn add(&mut self, pass: bool, goal: &str, measured: String, target: String) {
        self.0.push((pass, goal.to_owned(), measured, target));
    }

    pub(crate) fn print(&self) {
        println!("\n| goal | measured | target | verdict |");
        println!("|---|---|---|---|");
        for (pass, goal, measured, target) in &self.0 {
            let verdict = if *pass { "PASS" } else { "FAIL" };
            println!("| {goal} | {measured} | {target} | {verdict} |");
        }
    }
}

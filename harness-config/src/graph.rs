//! The dependency graph: start order in waves, stop order, cycles.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Project;

/// Services that can start together: every dependency of a wave is in an earlier wave.
pub type Wave = Vec<String>;

/// The dependency graph has a cycle; it lists the services in it, first one repeated at the end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle: {}", .0.join(" → "))]
pub struct CycleError(pub Vec<String>);

impl Project {
    /// Start order: wave 0 has no dependencies, wave n depends only on waves < n. Names within
    /// a wave are sorted. Dependencies on unknown services are ignored (validation reports them).
    pub fn start_waves(&self) -> Result<Vec<Wave>, CycleError> {
        let mut remaining: BTreeMap<&str, BTreeSet<&str>> = self
            .services
            .iter()
            .map(|(name, s)| {
                let deps = s
                    .depends_on
                    .keys()
                    .map(String::as_str)
                    .filter(|d| self.services.contains_key(*d))
                    .collect();
                (name.as_str(), deps)
            })
            .collect();
        let mut waves = Vec::new();
        while !remaining.is_empty() {
            let ready: Vec<&str> = remaining
                .iter()
                .filter(|(_, deps)| deps.is_empty())
                .map(|(name, _)| *name)
                .collect();
            if ready.is_empty() {
                let cycle = find_cycles(self).into_iter().next().unwrap_or_default();
                return Err(CycleError(cycle));
            }
            for name in &ready {
                remaining.remove(name);
            }
            for deps in remaining.values_mut() {
                for name in &ready {
                    deps.remove(name);
                }
            }
            waves.push(ready.into_iter().map(str::to_owned).collect());
        }
        Ok(waves)
    }

    /// Stop order: dependents before their dependencies, i.e. the start waves reversed.
    pub fn stop_waves(&self) -> Result<Vec<Wave>, CycleError> {
        let mut waves = self.start_waves()?;
        waves.reverse();
        Ok(waves)
    }
}

/// Every elementary cycle found by depth-first search, each once, as `a, b, c, a`, rotated to
/// start at its smallest name so the report is stable.
pub(crate) fn find_cycles(project: &Project) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let names: Vec<&str> = project.services.keys().map(String::as_str).collect();
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let edges: Vec<Vec<usize>> = project
        .services
        .values()
        .map(|s| {
            s.depends_on
                .keys()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let mut marks = vec![Mark::New; names.len()];
    let mut seen = BTreeSet::new();
    let mut cycles = Vec::new();
    for start in 0..names.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge to follow); the stack is the current path.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match marks[to] {
                    Mark::New => {
                        marks[to] = Mark::Active;
                        stack.push((to, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|(n, _)| *n == to).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                        let min = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, n)| names[**n])
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(min);
                        if seen.insert(cycle.clone()) {
                            let mut named: Vec<String> =
                                cycle.iter().map(|n| names[*n].to_owned()).collect();
                            named.push(named[0].clone());
                            cycles.push(named);
                        }
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    cycles
}

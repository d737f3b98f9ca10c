//! A scenario's results: ordered (name, value) rows, printed as a table or JSON.

use serde_json::{Map, Value};

pub struct Report {
    pub scenario: &'static str,
    rows: Vec<(String, Value)>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, name: &str, value: impl Into<Value>) {
        self.rows.push((name.to_string(), value.into()));
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.rows.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut out = format!("scenario: {}\n", self.scenario);
        for (n, v) in &self.rows {
            let v = match v {
                Value::Number(x) if x.is_f64() => format!("{:.3}", x.as_f64().unwrap_or(0.0)),
                other => other.to_string(),
            };
            out += &format!("  {n:<width$}  {v}\n");
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("scenario".into(), self.scenario.into());
        for (n, v) in &self.rows {
            m.insert(n.clone(), v.clone());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json_keep_rows_in_order() {
        let mut r = Report::new("hot-room");
        r.add("members", 1000);
        r.add("delivered_ratio", 0.99951);
        r.add("first_error", "refused");
        let table = r.table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "scenario: hot-room");
        assert!(lines[1].contains("members") && lines[1].ends_with("1000"));
        assert!(
            lines[2].ends_with("1.000"),
            "floats print with 3 decimals: {}",
            lines[2]
        );
        assert!(lines[3].ends_with("\"refused\""));
        let json = r.to_json();
        assert_eq!(json["scenario"], "hot-room");
        assert_eq!(json["members"], 1000);
        assert_eq!(
            r.get("delivered_ratio").and_then(|v| v.as_f64()),
            Some(0.99951)
        );
    }
}

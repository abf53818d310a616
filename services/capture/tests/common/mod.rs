//! Test helpers shared by capture's test binaries (`mod common;`).

use std::sync::Arc;

/// Last values of gauges by name and labels, as a global recorder (the stream code records
/// through the `metrics` macros).
#[derive(Default)]
pub struct GaugeRecorder(Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>);

struct GaugeCell(
    String,
    Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>,
);

impl metrics::GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.1.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl metrics::Recorder for GaugeRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        metrics::Gauge::from_arc(Arc::new(GaugeCell(name, Arc::clone(&self.0))))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

pub type Gauges = Arc<std::sync::Mutex<std::collections::HashMap<String, f64>>>;

pub fn gauges() -> &'static Gauges {
    static GAUGES: std::sync::OnceLock<Gauges> = std::sync::OnceLock::new();
    GAUGES.get_or_init(|| {
        let recorder = GaugeRecorder::default();
        let values = Arc::clone(&recorder.0);
        metrics::set_global_recorder(recorder).expect("no other recorder in this test binary");
        values
    })
}

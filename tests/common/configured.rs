//! autos with settings that [`Options`] does not carry (limits, quotas, sparing the court):
//! the test sets them on the [`Config`] itself.

use super::{client_with, config, create_key, Court, Options, TestApp, TestDb, TestS3, TENANT};
use autos::app::Application;
use autos::config::Config;

impl TestApp {
    /// As [`TestApp::spawn_with`], with `set` applied to the configuration before start.
    pub async fn spawn_configured(
        court: Court,
        options: Options,
        set: impl FnOnce(&mut Config),
    ) -> TestApp {
        let db = TestDb::new().await;
        let s3 = TestS3::start().await;
        let mut cfg = config(&db.url, &s3, &court.url(), &options);
        set(&mut cfg);
        let app = Application::start(cfg, options.role)
            .await
            .expect("start autos");
        let addr = app.addr.expect("serving");
        let key = create_key(&db.url, TENANT, &[autos::auth::Scope::Write]).await;
        TestApp {
            app: Some(app),
            addr,
            http: client_with(&key),
            key,
            db,
            s3,
            court,
        }
    }
}

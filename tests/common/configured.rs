//! autos with settings that [`Options`] does not carry (limits, quotas, sparing the court,
//! a proxy in front of a peer): the test sets them on the [`Config`] itself.

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
        let (db, s3) = (TestDb::new().await, TestS3::start().await);
        Self::spawn_on(court, db, s3, options, set).await
    }

    /// As [`TestApp::spawn_configured`], on a database and an S3 server made beforehand (say,
    /// to put a proxy in front of one of them).
    pub async fn spawn_on(
        court: Court,
        db: TestDb,
        s3: TestS3,
        options: Options,
        set: impl FnOnce(&mut Config),
    ) -> TestApp {
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

    /// As [`TestApp::another`], with `set` applied to the configuration before start.
    pub async fn another_configured(
        &self,
        options: Options,
        set: impl FnOnce(&mut Config),
    ) -> Application {
        let mut cfg = config(&self.db.url, &self.s3, &self.court.url(), &options);
        set(&mut cfg);
        Application::start(cfg, options.role)
            .await
            .expect("start another autos")
    }
}

//! A stand-in for `multiproc::__private` that serves objects in this process: the
//! same names and signatures, arguments and replies encoded with postcard as the
//! real manager encodes them, so the expansion runs end to end without a server.

pub mod __private {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    pub use serde;
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum CallError {
        NoSuchMethod { typeid: String, method: String },
        BadArguments(String),
        Failed(String),
    }

    #[derive(Debug, PartialEq)]
    pub enum Error {
        Call(CallError),
        Decode(String),
    }

    pub type Result<T> = std::result::Result<T, Error>;

    pub trait Registered: Send + 'static + Sized {
        const TYPEID: &'static str;
        fn construct(ctor: &str, args: &[u8]) -> std::result::Result<Self, CallError>;
        fn dispatch(
            &mut self,
            method: &str,
            args: &[u8],
        ) -> std::result::Result<Vec<u8>, CallError>;
    }

    pub trait Proxy: Sized {
        const TYPEID: &'static str;
        fn from_core(core: ProxyCore) -> Self;
        fn core(&self) -> &ProxyCore;
    }

    pub fn constructor_failed<E: std::fmt::Display>(e: E) -> CallError {
        CallError::Failed(e.to_string())
    }

    pub fn decode_args<A: DeserializeOwned>(args: &[u8]) -> std::result::Result<A, CallError> {
        postcard::from_bytes(args).map_err(|e| CallError::BadArguments(e.to_string()))
    }

    pub fn encode_reply<R: Serialize + ?Sized>(
        value: &R,
    ) -> std::result::Result<Vec<u8>, CallError> {
        postcard::to_stdvec(value).map_err(|e| CallError::BadArguments(e.to_string()))
    }

    type Call = dyn FnMut(&str, &[u8]) -> std::result::Result<Vec<u8>, CallError> + Send;
    type Construct = fn(&str, &[u8]) -> std::result::Result<Box<Call>, CallError>;

    fn objects() -> &'static Mutex<HashMap<u64, Box<Call>>> {
        static OBJECTS: OnceLock<Mutex<HashMap<u64, Box<Call>>>> = OnceLock::new();
        OBJECTS.get_or_init(Default::default)
    }

    /// The registry of a manager: constructors by typeid.
    #[derive(Default)]
    pub struct Manager {
        types: HashMap<&'static str, Construct>,
    }

    impl Manager {
        pub fn register<T: Registered>(mut self) -> Self {
            self.types.insert(T::TYPEID, |ctor, args| {
                let mut object = T::construct(ctor, args)?;
                Ok(Box::new(move |method: &str, args: &[u8]| {
                    object.dispatch(method, args)
                }))
            });
            self
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ProxyCore {
        typeid: String,
        id: u64,
    }

    impl ProxyCore {
        pub fn create<A: Serialize + ?Sized>(
            manager: &Manager,
            typeid: &str,
            ctor: &str,
            args: &A,
        ) -> Result<ProxyCore> {
            let construct = manager.types.get(typeid).ok_or_else(|| {
                Error::Call(CallError::NoSuchMethod {
                    typeid: typeid.into(),
                    method: ctor.into(),
                })
            })?;
            let args = postcard::to_stdvec(args).map_err(|e| Error::Decode(e.to_string()))?;
            let object = construct(ctor, &args).map_err(Error::Call)?;
            static NEXT: AtomicU64 = AtomicU64::new(1);
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            objects().lock().unwrap().insert(id, object);
            Ok(ProxyCore {
                typeid: typeid.into(),
                id,
            })
        }

        pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
            &self,
            method: &str,
            args: &A,
        ) -> Result<R> {
            let args = postcard::to_stdvec(args).map_err(|e| Error::Decode(e.to_string()))?;
            let reply = {
                let mut objects = objects().lock().unwrap();
                let object = objects.get_mut(&self.id).expect("a live object");
                object(method, &args).map_err(Error::Call)?
            };
            postcard::from_bytes(&reply).map_err(|e| Error::Decode(e.to_string()))
        }

        pub fn typeid(&self) -> &str {
            &self.typeid
        }
    }
}

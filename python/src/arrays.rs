//! numpy arrays to and from pslite's keys and values.
//!
//! A request's keys and values are sent from the caller's arrays without a
//! copy when their layout allows (C-contiguous, native little-endian): the
//! request's `Bytes` hold a reference to the array, which lives as long as
//! any frame still carries its memory. Anything else (a list, a strided
//! view) goes through one numpy conversion first. Pulled values arrive in
//! a new array with one copy.
//!
//! pslite's wire format is little-endian, and so are the arrays shared
//! here byte for byte: the bindings build for little-endian machines only.

#[cfg(target_endian = "big")]
compile_error!("pslite's Python bindings share numpy memory as little-endian bytes");

use bytes::Bytes;
use numpy::{
    dtype, Element as NumpyElement, PyArray1, PyArrayDescr, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pslite_core::{DType, Element, Keys, Values};
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The value types pslite and numpy share, by their numpy names.
const VALUE_DTYPES: &str = "float32, float64, int32, int64 or uint8";

/// The keys of a request: a uint64 array, or an iterable of ints in
/// `0..2**64`. Other integer arrays are refused rather than converted, and
/// so are negative, too large or fractional keys in a list, which numpy
/// would wrap or truncate into another key without a word.
pub(crate) fn keys(keys: &Bound<'_, PyAny>) -> PyResult<Keys> {
    let py = keys.py();
    let array = match keys.cast::<PyUntypedArray>() {
        Ok(array) => array.clone(),
        Err(_) => return key_list(keys),
    };
    let found = array.dtype();
    if !found.is_equiv_to(&dtype::<u64>(py)) {
        return Err(PyTypeError::new_err(format!("keys must be a uint64 array, not {found}")));
    }
    Ok(Keys::from_bytes(share::<u64>(&array)?).expect("eight bytes per uint64"))
}

/// Keys from an iterable of Python ints (or anything with `__index__`,
/// such as numpy integers), each checked on its own.
fn key_list(keys: &Bound<'_, PyAny>) -> PyResult<Keys> {
    let mut list = Vec::new();
    for (index, key) in keys.try_iter()?.enumerate() {
        let key = key?;
        let value = key.extract::<u64>().map_err(|error| {
            let why = format!(
                "key at index {index} ({}) is not an integer in [0, 2**64): {error}",
                key.repr().map_or_else(|_| "?".into(), |r| r.to_string())
            );
            if error.is_instance_of::<PyOverflowError>(key.py()) {
                PyOverflowError::new_err(why)
            } else {
                PyTypeError::new_err(why)
            }
        })?;
        list.push(value);
    }
    Ok(Keys::from_slice(&list))
}

/// The values of a request: an array of one of [`VALUE_DTYPES`], or a list
/// (made float32, the default store's type).
pub(crate) fn values(values: &Bound<'_, PyAny>) -> PyResult<Values> {
    let py = values.py();
    let array = match values.cast::<PyUntypedArray>() {
        Ok(array) => array.clone(),
        Err(_) => asarray(values, Some(&dtype::<f32>(py)))?,
    };
    let dtype = dtype_of(&array.dtype())?;
    let bytes = match dtype {
        DType::F32 => share::<f32>(&array)?,
        DType::F64 => share::<f64>(&array)?,
        DType::I32 => share::<i32>(&array)?,
        DType::I64 => share::<i64>(&array)?,
        DType::U8 => share::<u8>(&array)?,
    };
    Ok(Values::from_bytes(dtype, bytes).expect("whole elements"))
}

/// The pslite type of a numpy dtype (anything `numpy.dtype()` accepts;
/// `None` is float32).
pub(crate) fn parse_dtype(dtype: Option<&Bound<'_, PyAny>>) -> PyResult<DType> {
    match dtype {
        None => Ok(DType::F32),
        Some(dtype) if dtype.is_none() => Ok(DType::F32),
        Some(dtype) => dtype_of(&PyArrayDescr::new(dtype.py(), dtype)?),
    }
}

/// The numpy name of a pslite type.
pub(crate) fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::I32 => "int32",
        DType::I64 => "int64",
        DType::U8 => "uint8",
    }
}

/// A new 1-D array holding `values`: one copy.
pub(crate) fn to_array<'py>(py: Python<'py>, values: &Values) -> Bound<'py, PyAny> {
    match values.dtype() {
        DType::F32 => filled::<f32>(py, values),
        DType::F64 => filled::<f64>(py, values),
        DType::I32 => filled::<i32>(py, values),
        DType::I64 => filled::<i64>(py, values),
        DType::U8 => filled::<u8>(py, values),
    }
}

/// A new 1-D uint64 array holding `keys`.
pub(crate) fn keys_to_array<'py>(py: Python<'py>, keys: &Keys) -> Bound<'py, PyAny> {
    PyArray1::from_vec(py, keys.to_vec()).into_any()
}

fn dtype_of(descr: &Bound<'_, PyArrayDescr>) -> PyResult<DType> {
    let py = descr.py();
    let candidates = [
        (dtype::<f32>(py), DType::F32),
        (dtype::<f64>(py), DType::F64),
        (dtype::<i32>(py), DType::I32),
        (dtype::<i64>(py), DType::I64),
        (dtype::<u8>(py), DType::U8),
    ];
    candidates
        .into_iter()
        .find(|(candidate, _)| descr.is_equiv_to(candidate))
        .map(|(_, dtype)| dtype)
        .ok_or_else(|| PyTypeError::new_err(format!("values must be {VALUE_DTYPES}, not {descr}")))
}

/// `numpy.asarray(object, dtype)`.
fn asarray<'py>(
    object: &Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyArrayDescr>>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let py = object.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", dtype)?;
    let array = py.import("numpy")?.call_method("asarray", (object,), Some(&kwargs))?;
    Ok(array.cast_into::<PyUntypedArray>()?)
}

/// The array's memory as `Bytes` that keep the array alive (made
/// C-contiguous first if it is not).
fn share<T: NumpyElement>(array: &Bound<'_, PyUntypedArray>) -> PyResult<Bytes> {
    let array = if array.is_c_contiguous() {
        array.cast::<PyArrayDyn<T>>()?.clone()
    } else {
        let py = array.py();
        py.import("numpy")?.call_method1("ascontiguousarray", (array,))?.cast_into::<PyArrayDyn<T>>()?
    };
    let len = array.len() * size_of::<T>();
    if len == 0 {
        return Ok(Bytes::new());
    }
    let data = array.data() as usize;
    Ok(Bytes::from_owner(ArrayBytes { _array: array.into_any().unbind(), data, len }))
}

/// A new 1-D array of `values.len()` elements of `T` holding `values`.
fn filled<'py, T: Element + NumpyElement>(py: Python<'py>, values: &Values) -> Bound<'py, PyAny> {
    let array = PyArray1::<T>::zeros(py, values.len(), false);
    {
        let mut out = array.readwrite();
        let out = out.as_slice_mut().expect("a new array is contiguous");
        bytemuck::cast_slice_mut::<T, u8>(out).copy_from_slice(values.as_bytes());
    }
    array.into_any()
}

/// The memory of a C-contiguous numpy array, owned by a reference to it.
struct ArrayBytes {
    /// Keeps the memory alive. Dropped on whatever thread drops the last
    /// frame; without the GIL there, pyo3 defers the decref until a thread
    /// next holds it, so a runtime thread never waits for the GIL here.
    _array: Py<PyAny>,
    /// Address of the first byte.
    data: usize,
    /// Bytes from there.
    len: usize,
}

impl AsRef<[u8]> for ArrayBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `data..data + len` is the memory of a C-contiguous numpy
        // array (made so in `share`, where `len > 0`: the address is not null)
        // that `_array` keeps alive. numpy does not move an array's memory
        // while other references to it exist (`resize` refuses then). The
        // caller may still write to it through Python before the request
        // completes, as with ps-lite's ZPush: the docs forbid that, and the
        // bytes read are then plain numbers either way, never pointers.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.data as *const u8, self.len)
        }
    }
}

namespace VirtioSharp.Rbd.Native;

/// <summary>
/// The librados and librbd C API (Debian's librados2 and librbd1), one small file per call or
/// per small group. These libraries report failure as a negative errno in the return value and
/// do not promise errno itself, so the imports do not capture the last error: callers look at
/// the returned value.
/// </summary>
internal static partial class RbdInterop
{
    internal const string Librados = "librados.so.2";
    internal const string Librbd = "librbd.so.1";
}

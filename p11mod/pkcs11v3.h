/*
 * What Cryptoki 3.0 adds that ctok-p11.so uses, for a pkcs11.h of version 2.40 (p11-kit's on
 * Debian 12): interfaces (CK_INTERFACE, C_GetInterfaceList, C_GetInterface), the 3.0 function
 * list and its new function types, and the flag and return values used. Written from the
 * OASIS PKCS #11 3.0 base specification (sections 3.4, 4.12, 5.4 and 5.6 to 5.15); a
 * pkcs11.h that has 3.0 defines all of it and wins.
 */
#ifndef CTOK_PKCS11V3_H
#define CTOK_PKCS11V3_H

#include <p11-kit/pkcs11.h>

/* A header with 3.0 defines CKF_INTERFACE_FORK_SAFE beside CK_INTERFACE, whatever its
 * CRYPTOKI_VERSION_* says (OASIS's says 3). */
#if CRYPTOKI_VERSION_MAJOR < 3 && !defined(CKF_INTERFACE_FORK_SAFE)

/* An interface: a name ("PKCS 11" for the standard's), its function list (which begins with
 * its CK_VERSION) and its flags. */
typedef struct CK_INTERFACE {
    CK_CHAR *pInterfaceName;
    CK_VOID_PTR pFunctionList;
    CK_FLAGS flags;
} CK_INTERFACE;
typedef CK_INTERFACE *CK_INTERFACE_PTR;
typedef CK_INTERFACE_PTR *CK_INTERFACE_PTR_PTR;

typedef CK_RV (*CK_C_GetInterfaceList)(CK_INTERFACE_PTR list, CK_ULONG_PTR count);
typedef CK_RV (*CK_C_GetInterface)(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version,
                                   CK_INTERFACE_PTR_PTR iface, CK_FLAGS flags);
typedef CK_RV (*CK_C_LoginUser)(CK_SESSION_HANDLE session, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
                                CK_ULONG pin_len, CK_UTF8CHAR_PTR username, CK_ULONG username_len);
typedef CK_RV (*CK_C_SessionCancel)(CK_SESSION_HANDLE session, CK_FLAGS flags);

/* Message-based encryption and decryption (5.13, 5.14) share their shapes. */
typedef CK_RV (*CK_C_MessageEncryptInit)(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mech,
                                         CK_OBJECT_HANDLE key);
typedef CK_RV (*CK_C_EncryptMessage)(CK_SESSION_HANDLE session, CK_VOID_PTR param,
                                     CK_ULONG param_len, CK_BYTE_PTR aad, CK_ULONG aad_len,
                                     CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,
                                     CK_ULONG_PTR out_len);
typedef CK_RV (*CK_C_EncryptMessageBegin)(CK_SESSION_HANDLE session, CK_VOID_PTR param,
                                          CK_ULONG param_len, CK_BYTE_PTR aad, CK_ULONG aad_len);
typedef CK_RV (*CK_C_EncryptMessageNext)(CK_SESSION_HANDLE session, CK_VOID_PTR param,
                                         CK_ULONG param_len, CK_BYTE_PTR in, CK_ULONG in_len,
                                         CK_BYTE_PTR out, CK_ULONG_PTR out_len, CK_FLAGS flags);
typedef CK_RV (*CK_C_MessageEncryptFinal)(CK_SESSION_HANDLE session);
typedef CK_C_MessageEncryptInit CK_C_MessageDecryptInit;
typedef CK_C_EncryptMessage CK_C_DecryptMessage;
typedef CK_C_EncryptMessageBegin CK_C_DecryptMessageBegin;
typedef CK_C_EncryptMessageNext CK_C_DecryptMessageNext;
typedef CK_C_MessageEncryptFinal CK_C_MessageDecryptFinal;

/* Message-based signatures and verification (5.15, 5.16). */
typedef CK_C_MessageEncryptInit CK_C_MessageSignInit;
typedef CK_RV (*CK_C_SignMessage)(CK_SESSION_HANDLE session, CK_VOID_PTR param, CK_ULONG param_len,
                                  CK_BYTE_PTR data, CK_ULONG data_len, CK_BYTE_PTR sig,
                                  CK_ULONG_PTR sig_len);
typedef CK_RV (*CK_C_SignMessageBegin)(CK_SESSION_HANDLE session, CK_VOID_PTR param,
                                       CK_ULONG param_len);
typedef CK_C_SignMessage CK_C_SignMessageNext;
typedef CK_C_MessageEncryptFinal CK_C_MessageSignFinal;
typedef CK_C_MessageEncryptInit CK_C_MessageVerifyInit;
typedef CK_RV (*CK_C_VerifyMessage)(CK_SESSION_HANDLE session, CK_VOID_PTR param,
                                    CK_ULONG param_len, CK_BYTE_PTR data, CK_ULONG data_len,
                                    CK_BYTE_PTR sig, CK_ULONG sig_len);
typedef CK_C_SignMessageBegin CK_C_VerifyMessageBegin;
typedef CK_C_VerifyMessage CK_C_VerifyMessageNext;
typedef CK_C_MessageEncryptFinal CK_C_MessageVerifyFinal;

/* The 3.0 function list: the 2.40 list's functions in their order, then the new ones. */
typedef struct CK_FUNCTION_LIST_3_0 {
    CK_VERSION version;
    CK_C_Initialize C_Initialize;
    CK_C_Finalize C_Finalize;
    CK_C_GetInfo C_GetInfo;
    CK_C_GetFunctionList C_GetFunctionList;
    CK_C_GetSlotList C_GetSlotList;
    CK_C_GetSlotInfo C_GetSlotInfo;
    CK_C_GetTokenInfo C_GetTokenInfo;
    CK_C_GetMechanismList C_GetMechanismList;
    CK_C_GetMechanismInfo C_GetMechanismInfo;
    CK_C_InitToken C_InitToken;
    CK_C_InitPIN C_InitPIN;
    CK_C_SetPIN C_SetPIN;
    CK_C_OpenSession C_OpenSession;
    CK_C_CloseSession C_CloseSession;
    CK_C_CloseAllSessions C_CloseAllSessions;
    CK_C_GetSessionInfo C_GetSessionInfo;
    CK_C_GetOperationState C_GetOperationState;
    CK_C_SetOperationState C_SetOperationState;
    CK_C_Login C_Login;
    CK_C_Logout C_Logout;
    CK_C_CreateObject C_CreateObject;
    CK_C_CopyObject C_CopyObject;
    CK_C_DestroyObject C_DestroyObject;
    CK_C_GetObjectSize C_GetObjectSize;
    CK_C_GetAttributeValue C_GetAttributeValue;
    CK_C_SetAttributeValue C_SetAttributeValue;
    CK_C_FindObjectsInit C_FindObjectsInit;
    CK_C_FindObjects C_FindObjects;
    CK_C_FindObjectsFinal C_FindObjectsFinal;
    CK_C_EncryptInit C_EncryptInit;
    CK_C_Encrypt C_Encrypt;
    CK_C_EncryptUpdate C_EncryptUpdate;
    CK_C_EncryptFinal C_EncryptFinal;
    CK_C_DecryptInit C_DecryptInit;
    CK_C_Decrypt C_Decrypt;
    CK_C_DecryptUpdate C_DecryptUpdate;
    CK_C_DecryptFinal C_DecryptFinal;
    CK_C_DigestInit C_DigestInit;
    CK_C_Digest C_Digest;
    CK_C_DigestUpdate C_DigestUpdate;
    CK_C_DigestKey C_DigestKey;
    CK_C_DigestFinal C_DigestFinal;
    CK_C_SignInit C_SignInit;
    CK_C_Sign C_Sign;
    CK_C_SignUpdate C_SignUpdate;
    CK_C_SignFinal C_SignFinal;
    CK_C_SignRecoverInit C_SignRecoverInit;
    CK_C_SignRecover C_SignRecover;
    CK_C_VerifyInit C_VerifyInit;
    CK_C_Verify C_Verify;
    CK_C_VerifyUpdate C_VerifyUpdate;
    CK_C_VerifyFinal C_VerifyFinal;
    CK_C_VerifyRecoverInit C_VerifyRecoverInit;
    CK_C_VerifyRecover C_VerifyRecover;
    CK_C_DigestEncryptUpdate C_DigestEncryptUpdate;
    CK_C_DecryptDigestUpdate C_DecryptDigestUpdate;
    CK_C_SignEncryptUpdate C_SignEncryptUpdate;
    CK_C_DecryptVerifyUpdate C_DecryptVerifyUpdate;
    CK_C_GenerateKey C_GenerateKey;
    CK_C_GenerateKeyPair C_GenerateKeyPair;
    CK_C_WrapKey C_WrapKey;
    CK_C_UnwrapKey C_UnwrapKey;
    CK_C_DeriveKey C_DeriveKey;
    CK_C_SeedRandom C_SeedRandom;
    CK_C_GenerateRandom C_GenerateRandom;
    CK_C_GetFunctionStatus C_GetFunctionStatus;
    CK_C_CancelFunction C_CancelFunction;
    CK_C_WaitForSlotEvent C_WaitForSlotEvent;
    CK_C_GetInterfaceList C_GetInterfaceList;
    CK_C_GetInterface C_GetInterface;
    CK_C_LoginUser C_LoginUser;
    CK_C_SessionCancel C_SessionCancel;
    CK_C_MessageEncryptInit C_MessageEncryptInit;
    CK_C_EncryptMessage C_EncryptMessage;
    CK_C_EncryptMessageBegin C_EncryptMessageBegin;
    CK_C_EncryptMessageNext C_EncryptMessageNext;
    CK_C_MessageEncryptFinal C_MessageEncryptFinal;
    CK_C_MessageDecryptInit C_MessageDecryptInit;
    CK_C_DecryptMessage C_DecryptMessage;
    CK_C_DecryptMessageBegin C_DecryptMessageBegin;
    CK_C_DecryptMessageNext C_DecryptMessageNext;
    CK_C_MessageDecryptFinal C_MessageDecryptFinal;
    CK_C_MessageSignInit C_MessageSignInit;
    CK_C_SignMessage C_SignMessage;
    CK_C_SignMessageBegin C_SignMessageBegin;
    CK_C_SignMessageNext C_SignMessageNext;
    CK_C_MessageSignFinal C_MessageSignFinal;
    CK_C_MessageVerifyInit C_MessageVerifyInit;
    CK_C_VerifyMessage C_VerifyMessage;
    CK_C_VerifyMessageBegin C_VerifyMessageBegin;
    CK_C_VerifyMessageNext C_VerifyMessageNext;
    CK_C_MessageVerifyFinal C_MessageVerifyFinal;
} CK_FUNCTION_LIST_3_0;
typedef CK_FUNCTION_LIST_3_0 *CK_FUNCTION_LIST_3_0_PTR;

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR list, CK_ULONG_PTR count);
CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE_PTR_PTR iface,
                     CK_FLAGS flags);

#endif /* no 3.0 pkcs11.h */

/* CK_INTERFACE.flags: forked processes keep their sessions, logins and operations. */
#ifndef CKF_INTERFACE_FORK_SAFE
#define CKF_INTERFACE_FORK_SAFE 0x00000001UL
#endif
/* C_SessionCancel's flag for an object search (the others are CK_MECHANISM_INFO's). */
#ifndef CKF_FIND_OBJECTS
#define CKF_FIND_OBJECTS 0x00000040UL
#endif
#ifndef CKR_OPERATION_CANCEL_FAILED
#define CKR_OPERATION_CANCEL_FAILED 0x00000202UL
#endif

/* The 3.0 X9.63 KDFs with SHA-3 (CK_ECDH1_DERIVE_PARAMS.kdf). */
#ifndef CKD_SHA3_224_KDF
#define CKD_SHA3_224_KDF 0x0000000AUL
#define CKD_SHA3_256_KDF 0x0000000BUL
#define CKD_SHA3_384_KDF 0x0000000CUL
#define CKD_SHA3_512_KDF 0x0000000DUL
#endif
#endif
